"""``uvicorn chatsite.asgi:application`` (from example_django/, with the repository root on
PYTHONPATH) serves the same app under ASGI; the middleware works the same way."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
application = get_asgi_application()
