"""The two-command setup: pyproject ranges, exact constraints, environment.yml in sync, make targets."""

import re
import subprocess
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli there
    import tomli as tomllib
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pyproject_requirements():
    project = PYPROJECT["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


def _constraints():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            pin = Requirement(line)  # e.g. "numpy==2.4.6; python_version >= '3.11'"
            if pin.marker is None or pin.marker.evaluate():
                pins[re.sub(r"[-_.]+", "-", pin.name).lower()] = Version(
                    str(pin.specifier).removeprefix("==")
                )
    return pins


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def test_environment_yml_lists_the_same_packages_as_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    from_yml = {str(Requirement(r)) for r in pip_section if not r.startswith("-e")}
    from_pyproject = {str(r) for r in _pyproject_requirements()}
    assert from_yml == from_pyproject
    assert "-e ." in pip_section, "conda users get course_utils installed too"


def test_constraints_pin_every_dependency_within_its_range():
    pins = _constraints()
    assert pins["torch"] == Version("2.14.1") and pins["torchvision"] == Version("0.29.1")
    for req in _pyproject_requirements():
        assert _norm(req.name) in pins, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pins[_norm(req.name)]), (
            f"{req.name}=={pins[_norm(req.name)]} breaks {req}"
        )


def test_pyproject_uses_ranges_so_colab_keeps_its_torch():
    for req in PYPROJECT["project"]["dependencies"]:
        assert "==" not in req, f"{req}: pin exact versions in constraints.txt, not pyproject.toml"


def test_installing_the_package_ships_course_utils_only():
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include == ["course_utils*"]


def test_readme_and_ci_use_the_same_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_bootstrap_is_idempotent():
    """After `make test` bootstrapped, the install stamp is up to date: a second run installs nothing."""
    result = subprocess.run(["make", "-q", ".venv/.installed"], cwd=ROOT)
    assert result.returncode == 0, (
        "make would reinstall: pyproject.toml or constraints.txt is newer than the stamp"
    )
