"""temporal: stable track ids for DiffSeg (or any) segmentations of video frames.

Public API (modules are imported on demand; this package imports nothing heavy):

- `temporal.tracker`: `VideoSegmenter`, `TrackerConfig`, `VideoState` (init_state/step/iter_video)
- `temporal.types`: `TrackedFrame`, `VideoResult`
- `temporal.api`: `segment_video`, `track_segments`, `track_stream`
- `temporal.matching`, `temporal.flow`: the pure matching and optical-flow functions
- `temporal.stitch`: `stitch_ids`, `apply_mapping` (chunks of one video)
- `temporal.evaluate`: DAVIS-2017 unsupervised J/F/J&F, id switches, per-frame oracle
"""
