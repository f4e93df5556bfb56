"""Every answer on /v1/* and /api/* is JSON in that surface's shape: unknown paths,
wrong methods, a bad Host header, Django's own error pages (and with DEBUG on, its
debug pages), whatever went wrong."""

import pytest
from rest_framework.authtoken.models import Token

from tests.support.factories import UserFactory


def relay_error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def api_error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert isinstance(body.get("detail"), str) and body["detail"], body
    return body


@pytest.fixture(params=[False, True], ids=["production", "debug"])
def debug(request, settings):
    settings.DEBUG = request.param
    return request.param


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/chat/completion"),
        ("POST", "/v1/chat/completions/"),
        ("GET", "/v1/"),
        ("GET", "/v1/assistants"),
        ("DELETE", "/v1/files/file-1"),
        ("POST", "/v1/engines/davinci/completions"),
    ],
)
def test_unknown_relay_paths_are_a_json_404_naming_the_url(
    relay_env, upstream, debug, method, path
):
    response = relay_env.http.request(
        method, path, headers={"authorization": f"Bearer {relay_env.key.secret}"}
    )
    error = relay_error(response, 404)
    assert error["code"] == "unknown_url"
    assert path in error["message"] and method in error["message"]
    assert upstream.calls == 0


def test_wrong_methods_on_relay_endpoints_are_json(relay_env, debug):
    for method, path in [("GET", "/v1/chat/completions"), ("POST", "/v1/models")]:
        error = relay_error(relay_env.http.request(method, path), 405)
        assert error["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    "path", ["/api/nothing-here/", "/api/accounts/999999/", "/api/keys/x/y/z", "/api"]
)
def test_unknown_api_paths_are_a_json_404(relay_env, debug, path):
    user = UserFactory(is_staff=True)
    token, _ = Token.objects.get_or_create(user=user)
    response = relay_env.http.get(path, headers={"authorization": f"Token {token.key}"})
    if path == "/api":  # no trailing slash: Django redirects to /api/
        assert response.status_code in (301, 302, 404)
        return
    api_error(response, 404)


def test_a_host_django_refuses_is_a_json_400(relay_env, debug):
    api_error(relay_env.http.get("/api/accounts/", headers={"host": "evil.example"}), 400)


def test_the_console_keeps_its_html_pages(relay_env, debug):
    response = relay_env.http.get("/no-such-page/")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
