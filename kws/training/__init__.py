"""The torch side of kws: the training model, the torch front end, `kws train`, `kws export` and the
legacy `.pt` model files. Nothing outside this subpackage imports torch, so the base install
(`pip install kws`, numpy only) never needs it."""
