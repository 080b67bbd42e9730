"""temporal: stable track ids for DiffSeg (or any) segmentations of video frames.

Public API (modules are imported on demand; this package imports nothing heavy):

- `temporal.tracker`: `VideoSegmenter`, `TrackerConfig`, `VideoState` (init_state/step/iter_video)
- `temporal.types`: `TrackedFrame`, `VideoResult`
- `temporal.api`: `segment_video`, `track_segments`, `track_stream`, `segment_frames`, `join_run`
- `temporal.matching`, `temporal.flow`: the pure matching and optical-flow functions
- `temporal.engine`: the linking engine (predict, evidence, associate, lifecycle), `EngineConfig`;
  `temporal.engine.join`: joining the pieces of an object after a run
- `temporal.evaluate`: DAVIS-2017 unsupervised J/F/J&F, id switches, per-frame oracle
"""
