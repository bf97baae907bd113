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
