"""Plugin discovery: duplicate names are an error naming both files."""

from __future__ import annotations

import pytest

from bibench.errors import UserError
from bibench.registry import ALGORITHMS, discover, load_plugin_file


def test_duplicate_name_names_both_files(tmp_path):
    discover()
    clash = tmp_path / "clash.py"
    clash.write_text(
        "from bibench import Algorithm, register_algorithm\n"
        "@register_algorithm('aid_cg')\n"
        "class Clash(Algorithm):\n    '''clash'''\n"
    )
    with pytest.raises(UserError) as info:
        load_plugin_file(clash)
    msg = str(info.value)
    assert "duplicate algorithm name 'aid_cg'" in msg
    assert str(clash) in msg and ALGORITHMS.files["aid_cg"] in msg
    assert ALGORITHMS.files["aid_cg"].endswith("algorithms/aid_cg.py")


def test_missing_plugin_file_is_named(tmp_path):
    with pytest.raises(UserError, match="plugin file not found"):
        load_plugin_file(tmp_path / "nope.py")


def test_entry_point_plugins_are_discovered(tmp_path, monkeypatch):
    import bibench.registry as registry

    (tmp_path / "ep_plugin_mod.py").write_text(
        "from bibench import Algorithm, register_algorithm\n"
        "@register_algorithm('from_entry_point')\n"
        "class FromEP(Algorithm):\n    '''Registered through an entry point.'''\n"
    )
    dist = tmp_path / "ep_plugin_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[bibench.plugins]\nmine = ep_plugin_mod\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_discovered", False)
    discover()
    assert ALGORITHMS.files["from_entry_point"] == str(tmp_path / "ep_plugin_mod.py")
