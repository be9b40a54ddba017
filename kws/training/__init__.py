"""The torch side of kws: the training model, the torch front end, `kws train`, `kws export`, the torch
model built from the .npz model file (modelfile.py), old `.pt` model files and training checkpoints
(ptfile.py). Nothing outside this subpackage imports torch, so the base install (`pip install kws`,
numpy only) never needs it. This side imports the base side; the base side reaches in only lazily, in
two places: enginefile.load_model of a `.pt` (ptfile) and KeywordSpotter(backend="torch")
(torch_stream); tests/test_imports.py holds both and fails on any import cycle."""
