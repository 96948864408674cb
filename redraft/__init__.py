"""Redraft: controllable generation and editing with diffusion language models.

One installed namespace: the product's top-level folders are its subpackages ``redraft.api``, ``redraft.workers``,
``redraft.constraints`` and ``redraft.storage``. An installed distribution holds them under ``redraft/``
(pyproject.toml maps them there); in a source checkout they stay at the repository's top level, where this
package looks for them too.
"""

from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "workers" / "__init__.py").is_file():
    __path__.append(str(_CHECKOUT))  # noqa: F821 - a package's own search path
