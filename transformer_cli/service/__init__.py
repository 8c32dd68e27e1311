"""`transformer-cli serve`: translation and attention maps over HTTP, batched across requests.

    from transformer_cli.service import ServeOptions, serve
    serve(ServeOptions("work/run", port=8000))

worker.ModelWorker owns the model and batches; app.create_app is the FastAPI app over it; api holds
the request bodies and limits; server.serve binds, runs uvicorn and drains on SIGTERM; static/ is the
attention explorer served at /.
"""

from transformer_cli.service.api import RequestLimits  # noqa: F401
from transformer_cli.service.server import ServeOptions, serve  # noqa: F401
from transformer_cli.service.worker import BatchLimits  # noqa: F401
