"""The token gate and the bind rule."""
from __future__ import annotations

import pytest

from voxsam.cli.main import main
from voxsam.errors import ConfigError
from voxsam.server.config import ServerConfig, check_bind

TOKEN = "s3cret-token-123"


def test_every_request_needs_the_token(make_client) -> None:
    c = make_client(token=TOKEN)
    for path in ("/api/health", "/api/volumes", "/", "/openapi.json"):
        r = c.get(path)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized", path
    assert c.get("/api/health", headers={"Authorization": "Bearer wrong-token-xyz"}).status_code == 401
    assert c.get("/api/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert c.get("/api/health", params={"token": TOKEN[:-1]}).status_code == 401


def test_token_in_the_query_sets_a_cookie_for_the_page(make_client) -> None:
    c = make_client(token=TOKEN)
    r = c.get("/api/health", params={"token": TOKEN})
    assert r.status_code == 200 and "HttpOnly" in r.headers["set-cookie"]
    assert c.get("/api/engines").status_code == 200  # the client now carries the cookie
    c.cookies.clear()
    assert c.get("/api/engines").status_code == 401


def test_binding_beyond_localhost_needs_a_token(capsys) -> None:
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", TOKEN)
    with pytest.raises(ConfigError, match="--token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--host", "0.0.0.0", "--port", "1"])
    assert exit_info.value.code == 2 and "--token" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="8 characters"):
        ServerConfig(token="short")
    with pytest.raises(ConfigError, match="not a folder"):
        ServerConfig(data_roots=("/no/such/folder",))
