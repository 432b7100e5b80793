"""`voxsam serve --open FILE` opens the volume before serving and prints the page's address for it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from voxsam.cli.main import main


def test_serve_open_prints_the_address_of_the_opened_volume(ct_file: Path, monkeypatch, capsys) -> None:
    import uvicorn

    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    main(["serve", "--open", str(ct_file), "--port", "8123", "--data-root", str(ct_file.parent)])
    out = capsys.readouterr().out
    volumes = served["app"].state.store.volumes()
    assert served["port"] == 8123 and served["host"] == "127.0.0.1"
    assert len(volumes) == 1 and volumes[0].name == "ct.nii.gz"
    assert f"http://localhost:8123/?volume={volumes[0].id}" in out


def test_serve_refuses_a_missing_file_before_binding(tmp_path: Path, monkeypatch, capsys) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: pytest.fail("must not start"))
    with pytest.raises(SystemExit) as info:
        main(["serve", "--open", str(tmp_path / "missing.nii.gz")])
    assert info.value.code == 2 and "missing.nii.gz" in capsys.readouterr().err
