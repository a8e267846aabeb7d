"""URLs of the test app. The route patterns are what trace names are made of."""

from django.urls import include, path, re_path

from . import views

api = [
    path("chat/<int:id>/", views.chat),
]

urlpatterns = [
    path("", views.root),
    path("api/v1/", include(api)),
    re_path(r"^legacy/(?P<id>[0-9]+)/$", views.chat),
    path("plain/", views.plain),
    path("whoami/", views.whoami),
    path("login-inside/", views.login_inside),
    path("token/", views.token_auth),
    path("override/", views.override),
    path("boom/", views.boom),
    path("server-error/", views.server_error),
    path("not-found/", views.not_found),
    path("session-touch/", views.session_touch),
    path("stream/", views.stream_sync),
    path("stream-failing/", views.stream_failing),
    path("astream/", views.stream_async),
    path("async/whoami/", views.async_whoami),
    path("async/plain/", views.async_plain),
    path("async/login-inside/", views.async_login_inside),
    path("async/boom/", views.async_boom),
    path("probe/", views.probe),
    path("iso/", views.isolation_sync),
    path("aiso/", views.isolation_async),
    path("task-headers/", views.task_headers),
    path("async/task-headers/", views.async_task_headers),
]
