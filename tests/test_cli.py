"""How the command line reports Kedro's own errors."""

from __future__ import annotations

from kedro.framework.cli.utils import KedroCliError

import pvg_pipeline.cli  # noqa: F401 - patches KedroCliError.show


def test_a_missing_jupyter_names_the_extra_to_install(capsys):
    KedroCliError(
        "Module 'notebook' not found. Make sure to install required project "
        "dependencies by running the 'pip install -r requirements.txt' command first."
    ).show()
    error = capsys.readouterr().err
    assert error.strip() == (
        "Error: Module 'notebook' not found: install the notebooks extra with "
        "`.venv/bin/pip install -e '.[notebooks]'`"
    )
    KedroCliError("Something else. Details.").show()
    assert capsys.readouterr().err.strip() == "Error: Something else. Details."
