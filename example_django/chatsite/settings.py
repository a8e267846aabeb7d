"""Settings of the example chat. The two lines that matter for posthog-llm-trace are marked."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
EVENTS_FILE = BASE_DIR / "events.jsonl"

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-example-chat-only")
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "posthog_llm_trace.django",  # <- posthog-llm-trace
    "chat",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "posthog_llm_trace.django.LLMTraceMiddleware",  # <- posthog-llm-trace
]

if os.environ.get("POSTHOG_API_KEY"):
    # POSTHOG_API_KEY (and POSTHOG_HOST, if set) come from the environment.
    POSTHOG_LLM_TRACE = {"FLUSH_INTERVAL": 2}
else:
    # No key: the events are written as JSON lines, to look at (or replay to PostHog later).
    POSTHOG_LLM_TRACE = {"EXPORT": "file", "EXPORT_FILE": str(EVENTS_FILE)}

ROOT_URLCONF = "chatsite.urls"
WSGI_APPLICATION = "chatsite.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"
USE_TZ = True
TIME_ZONE = "UTC"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"posthog_llm_trace": {"handlers": ["console"], "level": "INFO"}},
}
