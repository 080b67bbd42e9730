"""diffseg: the application layer of diffseg-vv, above its three packages.

The `diffseg` command (`cli`), the job planner (`jobs`) and the distributed runner
(`distributed`) live here: they are the only modules that know every input kind (images,
videos, volumes). `diffseg_core` (one image, frame or slice), `temporal` (linking frames) and
`volume` (linking slices) never import this package; `tests/test_layers.py` checks it.
"""
