"""The replace-one PLD accountant (Google's dp_accounting): what it says against the others."""

from __future__ import annotations

import pytest

from privacy.accounting import (
    ADD_OR_REMOVE_ONE,
    REPLACE_ONE,
    AccountingStep,
    compute_epsilon,
    get_accountant,
    noise_multiplier_for,
)

TRAINING = AccountingStep(noise_multiplier=4.0, sample_rate=0.2, steps=25)


def test_the_accountants_say_which_neighbours_their_epsilon_is_for():
    assert get_accountant("pld").neighbouring == REPLACE_ONE
    assert get_accountant("prv").neighbouring == ADD_OR_REMOVE_ONE


def test_replacing_a_row_costs_more_than_adding_or_removing_one():
    add_remove = compute_epsilon([TRAINING], delta=1e-5, accountant="prv")
    replace = compute_epsilon([TRAINING], delta=1e-5, accountant="pld")

    assert 1.5 * add_remove < replace < 2.5 * add_remove


def test_a_full_gaussian_release_under_replace_one_is_one_with_twice_the_sensitivity():
    release = AccountingStep(noise_multiplier=10.0, sample_rate=1.0, steps=1)
    halved = AccountingStep(noise_multiplier=5.0, sample_rate=1.0, steps=1)

    replace = compute_epsilon([release], delta=1e-5, accountant="pld")
    add_remove = compute_epsilon([halved], delta=1e-5, accountant="rdp")

    assert replace == pytest.approx(add_remove, rel=0.15)  # RDP is the looser of the two
    assert replace <= add_remove


def test_derived_noise_meets_the_target_under_replace_one():
    sigma = noise_multiplier_for(
        target_epsilon=1.0, target_delta=1e-5, sample_rate=0.2, steps=25, accountant="pld"
    )
    spent = compute_epsilon(
        [AccountingStep(noise_multiplier=sigma, sample_rate=0.2, steps=25)],
        delta=1e-5,
        accountant="pld",
    )

    assert 0.98 <= spent <= 1.0
