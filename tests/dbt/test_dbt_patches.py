"""The replacement for dbt-common's behaviour-flag source lookup names the same module as the original."""

from __future__ import annotations

import json
import subprocess
import sys

# In a fresh interpreter, so that the original is dbt-common's own, not one this session patched.
DECLARE_TWICE = """
import json
from dbt_common.behavior_flags import BehaviorFlagRendered
from segment_elt.pipeline import dbt_patches

FLAG = {"name": "some_flag", "default": False, "docs_url": "https://example.invalid"}

def declared_here(flag):
    return BehaviorFlagRendered(flag, {})._behavior_change_event.flag_source

original = declared_here(FLAG)
dbt_patches.apply()
print(json.dumps([original, declared_here(FLAG), declared_here({**FLAG, "source": "dbt-postgres"}),
                  BehaviorFlagRendered._default_source is dbt_patches._declaring_module]))
"""


def test_patched_lookup_names_the_declaring_module_as_the_original_does(tmp_path):
    script = tmp_path / "declare.py"  # a file, as every module dbt loads is (inspect finds no module for -c)
    script.write_text(DECLARE_TWICE)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout
    original, patched, given, installed = json.loads(out)
    assert installed
    assert patched == original == "__main__"
    assert given == "dbt-postgres"
