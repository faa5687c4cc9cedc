"""Developer tasks: ``nox`` runs lint, type checks, the whole test suite and the examples."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "examples"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

LINT_PATHS = ["src", "tests", "examples", "benchmarks", "noxfile.py"]


@nox.session
def lint(session: nox.Session) -> None:
    """ruff format --check and ruff check."""
    session.install("ruff>=0.6")
    session.run("ruff", "format", "--check", *LINT_PATHS)
    session.run("ruff", "check", *LINT_PATHS)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("mypy>=1.10", "-e", ".[test]")
    session.run("mypy", "--strict", "src")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (starts the services it needs by itself)."""
    session.install("-e", ".[test]")
    args = session.posargs or ["tests", "--ignore=tests/examples"]
    session.run("python", "-m", "pytest", *args)


@nox.session(python=["3.10", "3.12", "3.13"])
def compat(session: nox.Session) -> None:
    """The test suite on the other supported Pythons (not run by default: ``nox -s compat``)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "tests", "--ignore=tests/examples", *session.posargs)


@nox.session
def examples(session: nox.Session) -> None:
    """Start every example server, make one real request to it, stop it."""
    session.install("-e", ".[test]")
    session.run(
        "python", "-m", "pytest", "tests/examples", "examples/testing_example.py", *session.posargs
    )


#: The lowest versions ``pyproject.toml`` allows; ``mindeps`` tests against them.
MIN_DEPENDENCIES = ["h11==0.16.0", "wsproto==1.2.0", "multipart==1.2.0"]


@nox.session(python="3.10")
def mindeps(session: nox.Session) -> None:
    """The test suite on the oldest Python with the oldest allowed h11, wsproto and multipart
    (not run by default: ``nox -s mindeps``)."""
    session.install("-e", ".[test]")
    session.install(*MIN_DEPENDENCIES)
    session.run("python", "-m", "pytest", "tests", "--ignore=tests/examples", *session.posargs)
