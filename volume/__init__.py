"""volume: consistent 3D labels from slice-wise segmentations (CT, MRI, microscopy).

Public API:
    volume.api.segment_volume(input_path, output_path, segmenter, config) -> VolumeResult
    volume.api.stack_labels(labels_path, output_path, config, image_path=None) -> VolumeResult
    volume.types: Volume, VolumeLabels, VolumeConfig, VolumeResult, LabelInfo
    volume.io: read_volume, read_label_volume, write_labels
    volume.api.link_volume: slices through the linking engine (`temporal.engine`, slices preset)
    volume.postprocess: remove_fragments, relabel_consecutive, label_stats, split_at_waists, waist_cuts
    volume.fusion: fuse_majority (--axes all)
    volume.evaluate: volume_dice (3D Dice after Hungarian matching, per-slice oracle)

Submodules are imported lazily by their users; importing `volume` itself is cheap.
"""
