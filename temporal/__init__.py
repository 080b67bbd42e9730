"""temporal: stable track ids for DiffSeg (or any) segmentations of video frames."""
