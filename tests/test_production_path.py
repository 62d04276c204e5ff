"""The production code path knows nothing of the sandbox: configured for real systems, loading the
code location imports neither the generator nor the Odoo test double, and its Odoo resource is the
plain client over the network."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, sys
from fusion_billing_assets import definitions
odoo = definitions.defs.resources["odoo"]
print(json.dumps({
    "sandbox_modules": sorted(name for name in sys.modules if name.startswith("fusion_billing_assets.sandbox")),
    "odoo_resource": type(odoo).__module__ + "." + type(odoo).__name__,
}))
"""


def load_in_a_fresh_interpreter(tmp_path, **environment: str) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("NEXACLOUD_", "ODOO_", "BILLING_", "ALERT_"))
    }
    env.update({"DAGSTER_HOME": str(tmp_path), **environment})
    completed = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_production_definitions_import_no_sandbox_module(tmp_path):
    loaded = load_in_a_fresh_interpreter(
        tmp_path,
        NEXACLOUD_DATABASE_URL="postgresql+psycopg://reader:secret@db.internal:5432/nexacloud",
        ODOO_URL="https://odoo.nexa.example",
        ODOO_DATABASE="nexa",
        ODOO_API_KEY="not-a-real-key",
    )
    assert loaded["sandbox_modules"] == []
    assert loaded["odoo_resource"] == "fusion_billing_assets.defs.resources.OdooAPI"


def test_the_embedded_default_wires_the_test_double(tmp_path):
    loaded = load_in_a_fresh_interpreter(tmp_path)
    assert "fusion_billing_assets.sandbox.resources" in loaded["sandbox_modules"]
    # The test double itself is loaded only when a step first talks to Odoo, not at load.
    assert "fusion_billing_assets.sandbox.odoo_standin" not in loaded["sandbox_modules"]
    assert loaded["odoo_resource"] == "fusion_billing_assets.sandbox.resources.SandboxOdooAPI"
