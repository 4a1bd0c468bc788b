"""The charting library, served from the installed ``plotly`` package (never a CDN).

Plotly's Python package ships its JavaScript bundle; serving it from there keeps
a 4 MiB file out of the repository and its version in step with the package.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

router = APIRouter()


@cache
def plotly_bundle() -> Path | None:
    """The installed ``plotly.min.js``, or ``None`` if plotly is not installed."""
    try:
        import plotly
    except ImportError:
        return None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


@router.get("/assets/plotly.min.js", include_in_schema=False)
def plotly_js() -> Response:
    """Plotly's bundle (cached for a day); a no-op script if plotly is missing."""
    path = plotly_bundle()
    if path is None:
        return Response(
            "/* plotly is not installed: charts fall back to tables */",
            media_type="text/javascript",
        )
    return FileResponse(
        path, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"}
    )
