"""The averaging round behind the federated summary and the reference profile."""

from __future__ import annotations


def _result(node_id, vector, *, rows, metrics):
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
    from flwr.server.compat.grid_client_proxy import GridClientProxy

    proxy = GridClientProxy(node_id=node_id, grid=None, run_id=1)  # only its id is read
    return proxy, FitRes(
        status=Status(code=Code.OK, message=""),
        parameters=ndarrays_to_parameters([vector]),
        num_examples=rows,
        metrics=metrics,
    )


def test_refusals_are_reported_even_when_every_institution_refused():
    # Under SecAgg+ every result carries the unmasked aggregate; when every weight is 0
    # that aggregate is not finite, and the refusals must still reach the ledger.
    import numpy as np

    from server.averaging import AverageStrategy

    strategy = AverageStrategy(size=3, allowed={1, 2}, config={}, parameters=[], value_range=(0.0, 1.0))
    nan = np.full(3, np.nan)
    strategy.aggregate_fit(
        1,
        [_result(1, nan, rows=0, metrics={"institution": "A"}),
         _result(2, nan, rows=0, metrics={"institution": "B"})],
        [],
    )

    assert strategy.result is not None
    assert strategy.result.rows == 0.0
    assert [m["institution"] for m in strategy.result.metrics] == ["A", "B"]


def test_a_refusal_does_not_weigh_in_the_average():
    import numpy as np

    from server.averaging import AverageStrategy

    strategy = AverageStrategy(size=2, allowed={1, 2, 3}, config={}, parameters=[], value_range=(0.0, 1.0))
    strategy.aggregate_fit(
        1,
        [_result(1, np.array([0.2, 0.4]), rows=10, metrics={"institution": "A"}),
         _result(2, np.array([0.6, 0.8]), rows=30, metrics={"institution": "B"}),
         _result(3, np.full(2, np.nan), rows=0, metrics={"institution": "C"})],
        [],
    )

    assert strategy.result is not None
    np.testing.assert_allclose(strategy.result.vector, [0.5, 0.7])
    assert strategy.result.rows == 40.0
    assert len(strategy.result.metrics) == 3


def test_malformed_vectors_are_dropped_and_the_rest_averaged_by_rows():
    import numpy as np

    from server.averaging import AverageStrategy

    strategy = AverageStrategy(size=2, allowed={1, 2, 3, 4}, config={}, parameters=[], value_range=(0.0, 1.0))
    good = _result(1, np.array([0.2, 0.4]), rows=30, metrics={"fw.institution": "A"})
    also_good = _result(2, np.array([0.6, 0.8]), rows=10, metrics={"fw.institution": "B"})
    out_of_range = _result(3, np.array([5.0, 0.1]), rows=1000, metrics={"fw.institution": "C"})
    wrong_size = _result(4, np.array([0.1, 0.1, 0.1]), rows=1000, metrics={"fw.institution": "D"})

    strategy.aggregate_fit(0, [good, also_good, out_of_range, wrong_size], [])

    assert strategy.result is not None
    assert strategy.result.rows == 40
    np.testing.assert_allclose(strategy.result.vector, [0.3, 0.5])
    assert {m["fw.institution"] for m in strategy.result.metrics} == {"A", "B"}
