"""volume: consistent 3D labels from slice-wise segmentations."""
