"""``/docs`` without the internet: Swagger UI's assets served from an installed package.

FastAPI's default page loads Swagger UI from a CDN, which leaves it blank on an
air-gapped hospital network. The assets here come from ``swagger-ui-bundle``
(Swagger UI 4.15, the newest the package index carries), served under
``/docs/assets``. That Swagger UI reads OpenAPI 3.0, so the page is given the
service's document labelled ``3.0.3`` (``/docs/openapi.json``); the contract
itself stays at ``/openapi.json`` (OpenAPI 3.1).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"


def mount_docs(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` from the package's own files."""
    import swagger_ui_bundle

    app.mount(ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/docs/openapi.json",
            title=f"{app.title}: docs",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )

    @app.get("/docs/openapi.json", include_in_schema=False)
    def docs_schema() -> JSONResponse:
        document: dict[str, Any] = dict(app.openapi())
        document["openapi"] = "3.0.3"
        return JSONResponse(document)
