"""kedro-viz: the static build's API and the page rendered in headless Chromium."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest

from pvg_pipeline.pipeline_registry import register_pipelines

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    """Debian's chromium, installed on first use when we are root."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"],
            env=env,
            check=False,
            timeout=900,
        )
        found = shutil.which("chromium")
        if found:
            return found
    pytest.skip(
        "chromium is not installed and could not be installed (needs root and apt)"
    )


@pytest.fixture
def viz_build(project_copy):
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}
    subprocess.run(
        [sys.executable, "-m", "kedro", "viz", "build", "--include-previews"],
        cwd=project_copy,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return project_copy / "build"


@pytest.mark.slow
def test_viz_api_lists_every_pipeline_node_and_dataset(viz_build):
    main = json.loads((viz_build / "api" / "main").read_text())
    names = {node["name"]: node for node in main["nodes"]}
    pipelines = register_pipelines()
    for node in pipelines["__default__"].nodes:
        assert node.name in names, node.name
    for dataset in (
        "graph_pairs_train",
        "agents",
        "evaluation_metrics",
        "training_history",
    ):
        assert names[dataset]["type"] == "data"
        assert names[dataset]["layer"] is not None
    assert {p["id"] for p in main["pipelines"]} >= {
        "data_generation",
        "train",
        "evaluate",
        "compare",
        "__default__",
    }
    assert main["layers"] == ["raw", "primary", "models", "reporting"]
    compare = json.loads((viz_build / "api" / "pipelines" / "compare").read_text())
    assert "compare_runs" in {n["name"] for n in compare["nodes"]}


@pytest.mark.slow
def test_page_renders_the_pipeline_in_a_real_browser(viz_build, tmp_path):
    chromium = _chromium()
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(viz_build)
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        common = [
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=15000",
        ]
        dom = subprocess.run(
            [chromium, *common, "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        screenshot = tmp_path / "viz.png"
        subprocess.run(
            [
                chromium,
                *common,
                f"--screenshot={screenshot}",
                "--window-size=1400,900",
                url,
            ],
            capture_output=True,
            timeout=120,
        )
    finally:
        server.shutdown()
    for name in (
        "make_prime_table",
        "make_graph_pairs_train",
        "train_agents",
        "evaluate_agents",
        "graph_pairs_train",
        "agents",
        "evaluation_metrics",
    ):
        assert f">{name}</text>" in dom, name
    assert screenshot.stat().st_size > 10_000
