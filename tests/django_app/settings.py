"""Django settings for the test suite's Django app (see tests/test_django_*.py).

``POSTHOG_LLM_TRACE`` is deliberately absent: the app then leaves the process's default client
alone, so the rest of the suite is unaffected. Django tests choose their settings with the
``llm_settings`` fixture (tests/django_app/fixtures.py), through ``override_settings``.
"""

SECRET_KEY = "test-secret-key-not-for-production"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "posthog_llm_trace.django",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "posthog_llm_trace.django.LLMTraceMiddleware",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
ROOT_URLCONF = "tests.django_app.urls"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
