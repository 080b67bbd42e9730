"""Mutation check: plant one deliberate bug at a time and see whether the test suite notices.

Each mutant is an exact text replacement in one source file. For every mutant the working
tree is copied to a temporary folder, the bug is planted there, and pytest runs on the
mutant's test paths with ``DIFFSEG_SHARED`` pointing nowhere, so the run sees what a user's
clone sees (no ``../shared``: the parity and real-data tests skip). A mutant is *killed*
when pytest fails, and *survives* when the tests pass with the bug in place.

Usage::

    python tools/mutation_check.py                 # every mutant
    python tools/mutation_check.py --only merge    # names containing "merge"
    python tools/mutation_check.py --list

It prints one line per mutant and a summary; exit code 1 when a mutant survives. It is a
developer tool, not part of the test suite (each mutant costs a pytest run).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    """One planted bug.

    Attributes:
        name: short id (area.what).
        path: source file, relative to the repository.
        old: exact text to replace (must occur exactly once).
        new: the buggy text.
        tests: pytest paths that should catch it.
        why: what a user would see if it shipped.
    """

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str


CORE = ("tests/diffseg_core",)
TEMPORAL = ("tests/temporal",)
VOLUME = ("tests/volume",)
JOBS = ("tests/test_distributed.py", "tests/test_resume.py", "tests/test_cli_image.py", "tests/diffseg_core")

MUTANTS: list[Mutant] = [
    # ------------------------------------------------------------------ core math
    Mutant("merge.anchor_threshold_halved", "diffseg_core/merge.py",
           "merge_anchors(flat, anchors, kl_threshold[0], faithful_fp16=faithful_fp16)",
           "merge_anchors(flat, anchors, kl_threshold[0] / 2, faithful_fp16=faithful_fp16)",
           CORE, "over-segmentation: the first merge uses half the threshold"),
    Mutant("merge.iteration_skipped", "diffseg_core/merge.py",
           "for thr in kl_threshold[1:]:", "for thr in kl_threshold[2:]:",
           CORE, "one greedy merge iteration fewer than configured"),
    Mutant("merge.greedy_no_done_mask", "diffseg_core/merge.py",
           "            done |= row\n", "",
           CORE, "every proposal starts its own group: later iterations merge nothing new"),
    Mutant("merge.anchor_grid_not_centred", "diffseg_core/merge.py",
           "start = (length - 1 - span) // 2", "start = 0",
           CORE, "anchors shifted to the top-left corner"),
    Mutant("merge.kl_one_direction", "diffseg_core/merge.py",
           "o.addmm_(la, bc.T).mul_(-0.5).add_(0.5 * (ea[:, None] + eb[None, :]))",
           "o.mul_(-1).add_(ea[:, None])",
           CORE, "KL(a||b) instead of the symmetric KL (both merge paths)"),
    Mutant("merge.sum_not_mean", "diffseg_core/merge.py",
           "merged = (member[keep] @ x) / counts[keep, None]", "merged = member[keep] @ x",
           CORE, "proposals are sums, not means: big groups dominate the next iterations"),
    Mutant("aggregate.upsample_axes_swapped", "diffseg_core/aggregate.py",
           "    ux = bilinear_matrix(wr, w).to(maps.device)\n    uy = bilinear_matrix(hr, h).to(maps.device)",
           "    ux = bilinear_matrix(hr, h).to(maps.device)\n    uy = bilinear_matrix(wr, w).to(maps.device)",
           CORE, "coarse layers of non-square latents resampled along the wrong axes (or a shape error)"),
    Mutant("runtime.opt_out_ignored", "diffseg_core/runtime.py",
           'if os.environ.get(ENV, "").strip().lower() == "default":',
           'if False:',
           CORE, "DIFFSEG_MALLOC=default does not keep glibc's allocator settings"),
    Mutant("tracker.carved_not_written_back", "temporal/tracker.py",
           "out = cv2.copyTo(self._resize(r.labels, state.image_hw), (out < 0).view(np.uint8), out)",
           "pass",
           TEMPORAL, "carved segments keep the -1 marker at full resolution instead of the engine's ids"),
    Mutant("engine.colour_rows_shifted", "temporal/engine/linker.py",
           "np.where(learn, np.searchsorted(ids, pid), -1)",
           "np.where(learn, (np.searchsorted(ids, pid) + 1) % len(ids), -1)",
           TEMPORAL, "each track learns the colour of another track's pixels"),
    Mutant("engine.colour_learnt_from_carved_parts", "temporal/engine/linker.py",
           "learn = (pid > 0) & (~owns[pid] | (segment_ids[parts.segment] == pid))",
           "learn = pid > 0",
           TEMPORAL, "a track that owns a segment also learns the colour of what it carved elsewhere"),
    Mutant("evidence.histograms_of_excluded_parts", "temporal/engine/evidence.py",
           "sel = np.flatnonzero(group >= 0)", "sel = np.flatnonzero(group >= -1)",
           TEMPORAL, "parts in no group are counted in the last group's colour"),
    Mutant("flow.colour_check_one_past_the_edge", "temporal/flow.py",
           "(float(w - 1), float(h - 1))", "(float(w), float(h))",
           TEMPORAL, "flow that leaves the frame by a pixel passes the colour check"),
    Mutant("aggregate.equal_weights", "diffseg_core/aggregate.py",
           "return [s / total for s in sides]", "return [1.0 / len(sides) for s in sides]",
           CORE, "every resolution weighted equally instead of by its side"),
    Mutant("aggregate.no_renormalise", "diffseg_core/aggregate.py",
           "sums = keys.sum(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)",
           "sums = torch.ones_like(keys.sum(dim=(-2, -1), keepdim=True))",
           CORE, "upsampled keys not renormalised: coarse maps carry the wrong mass"),
    Mutant("nms.corner_aligned", "diffseg_core/nms.py",
           "src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).clamp_min(0)",
           "src = (torch.arange(n_out, dtype=torch.float64) * scale).clamp_min(0)",
           CORE, "labels shifted by half a latent cell"),
    Mutant("pipeline.no_relabel", "diffseg_core/pipeline.py",
           "labels, kept = relabel_consecutive(index, props.shape[0])",
           "labels, kept = index.to(torch.int32), torch.arange(props.shape[0])",
           CORE, "labels not consecutive; proposals that win no pixel are kept"),
    Mutant("segmenter.kl_threshold_ignored", "diffseg_core/segmenter.py",
           "seg = segment_aggregated(item.maps, self.config.merge, out_size=item.image_hw,",
           "seg = segment_aggregated(item.maps, type(self.config.merge)(), out_size=item.image_hw,",
           CORE, "--kl-threshold, --grid, --refine have no effect"),
    # ------------------------------------------------------------------ names (issue 18)
    Mutant("naming.no_spatial_normalisation", "diffseg_core/naming.py",
           "    tm = tm / np.where(tot > 0, tot, 1)[:, None, None]  # each word's map sums to 1 over space\n", "",
           CORE, "a word that draws more attention overall wins every segment"),
    Mutant("naming.share_not_lead", "diffseg_core/naming.py",
           "    lead = top[:, 0] - (top[:, 1] if sc.shape[1] > 1 else 0.0)",
           "    lead = top[:, 0]",
           CORE, "a tie of two words names the segment anyway"),
    Mutant("naming.votes_not_area_weighted", "diffseg_core/naming.py",
           "        votes = overlap @ sc  # (T, V): pixels of each track times the scores of their segments",
           "        votes = (overlap > 0) @ sc",
           CORE, "a sliver of a frame weighs as much as the whole object in the track's name"),
    Mutant("naming.shown_name_not_sticky", "diffseg_core/naming.py",
           "        elif best != cur and (tot[best] - tot[cur]) / a > self.switch_margin:",
           "        elif best != cur:",
           CORE, "the overlay's name flickers between two words frame to frame"),
    Mutant("naming.second_pass_segments_prompted", "diffseg_core/segmenter.py",
           "            emb = (pemb if same else m.empty_embedding).expand(n, -1, -1)",
           "            emb = (pemb if pemb is not None else m.empty_embedding).expand(n, -1, -1)",
           CORE, "naming changes the segments even in the default second-pass mode"),
    # ------------------------------------------------------------------ metrics
    Mutant("evaluate.j_over_gt_area", "temporal/evaluate.py",
           "iou = inter / np.maximum(ag[:, None] + ap[None, :] - inter, 1)",
           "iou = inter / np.maximum(ag[:, None], 1)",
           TEMPORAL, "J = intersection / ground-truth area (recall), not IoU"),
    Mutant("evaluate.f_radius_plus_one", "temporal/evaluate.py",
           "    k = _disk(r)\n", "    k = _disk(r + 1)\n",
           TEMPORAL, "boundary tolerance one pixel wider than DAVIS"),
    Mutant("evaluate.switch_any_overlap", "temporal/evaluate.py",
           "if iou[a, b] >= switch_iou:", "if iou[a, b] > 0:",
           TEMPORAL, "a sliver of another track counts as the object's id: switches inflated"),
    Mutant("evaluate.both_absent_dropped", "temporal/evaluate.py",
           "both_absent = n_frames - n_g[:, None] - n_p[None, :] + both",
           "both_absent = np.zeros_like(both)",
           TEMPORAL, "frames where object and track are both absent score 0 instead of 1"),
    Mutant("evaluate.f_precision_recall_swapped", "temporal/evaluate.py",
           "precision = float((bp & dg).sum()) / n_p", "precision = float((bp & dg).sum()) / n_g",
           TEMPORAL, "boundary precision divided by the ground-truth boundary length"),
    Mutant("bench.oracle_without_segment_0", "benchmarks/families.py",
           "    return segment_ids(maps) if isinstance(maps, np.ndarray) else [segment_ids(m) for m in maps]\n",
           "    return maps\n",
           ("tests/test_benchmark_families.py",),
           "the benchmarks' oracle cannot use segment 0 of a family's map: every ratio to it inflated"),
    Mutant("bench.ceiling_majority", "benchmarks/families.py",
           "    taken = np.arange(len(obj)) <= last[group]\n", "    taken = share > 0.5\n",
           ("tests/test_benchmark_families.py",),
           "the ceiling gives each segment to its majority object: thin objects get nothing, the ceiling too low"),
    Mutant("bench.ceiling_not_pooled", "benchmarks/families.py",
           "obj.append(o[keep] if pooled else o[keep] + f * (1 << 31))", "obj.append(o[keep] + f * (1 << 31))",
           ("tests/test_benchmark_families.py",),
           "the volume ceiling chooses segments slice by slice against the whole structure's size"),
    Mutant("bench.ceiling_conflict_to_smaller_share", "benchmarks/families.py",
           "order = np.lexsort((-share, unit))", "order = np.lexsort((share, unit))",
           ("tests/test_benchmark_families.py",),
           "a segment two objects want goes to the one it lies in less"),
    # ------------------------------------------------------------------ joining a finished run
    Mutant("join.colour_ignored", "temporal/engine/join.py",
           "            if not colour:\n                return True", "            if True:\n                return True",
           ("tests/temporal/test_join.py",),
           "an object and its ground join whenever their boundary wobbles, however different they look"),
    Mutant("join.share_without_kept", "temporal/engine/join.py",
           "return x / (x + kept[a] + kept[b])", "return x / (x + kept[a])",
           ("tests/temporal/test_join.py",),
           "the share counts one track's kept pixels: big tracks join their small neighbours"),
    Mutant("join.counts_not_merged", "temporal/engine/join.py",
           "traded[a][c] = traded[c][a] = traded[a].get(c, 0.0) + x", "traded[a][c] = traded[c][a] = x",
           ("tests/temporal/test_join.py",),
           "a joined group forgets what its first member traded with a third track"),
    Mutant("join.largest_id_names_group", "temporal/engine/join.py",
           "parent[b] = a  # b joins a", "parent[a] = b  # b joins a",
           ("tests/temporal/test_join.py",),
           "a group takes its youngest id: ids of long tracks change after the join"),
    Mutant("join.frames_not_checked", "temporal/api.py",
           "if fr.stem != stem or fr.rgb.shape[:2] != lab.shape:", "if fr.rgb.shape[:2] != lab.shape:",
           ("tests/temporal/test_join.py",),
           "another video's frames of the same size are taken for the run's"),
    Mutant("join.names_not_carried", "temporal/api.py",
           "        names[root] = names[donor]\n", "        pass\n",
           ("tests/temporal/test_join.py",),
           "a joined track loses the name its named piece had"),
    Mutant("join.overlay_without_carried_names", "temporal/writer.py",
           '(lambda t: self.names.get(t, {}).get("name")) if self._named else None)', "None)",
           ("tests/temporal/test_join.py",),
           "a joined run's overlay loses the names' legend its tracks.json still has"),
    Mutant("join.incomplete_run_joined", "temporal/cli.py",
           "    if not res.complete:\n        report.line +=", "    if False:\n        report.line +=",
           ("tests/temporal/test_join.py",),
           "`--join` joins a run that stopped early, and the joined folder looks complete"),
    Mutant("join.relative_source", "temporal/api.py",
           '"source": os.path.abspath(frames_source), "segments"', '"source": str(frames_source), "segments"',
           ("tests/temporal/test_join.py",),
           "a run names its frames by the path typed: `diffseg join` from another folder cannot find them"),
    Mutant("dicom_seg.slice_order", "volume/dicom.py",
           "if float(np.dot(lps[:3, 0], normal)) < 0:", "if False:",
           ("tests/volume/test_dicom_seg_in.py",),
           "a DICOM-SEG read alone comes back upside down: its labels on the wrong slices of the scan"),
    Mutant("dicom_seg.extent_unchecked", "volume/dicom.py",
           "    if referenced > data.shape[0]:", "    if False:",
           ("tests/volume/test_dicom_seg_in.py",),
           "a DICOM-SEG without its empty slices reads as a shorter volume: evaluated against the wrong slices"),
    Mutant("dicom_seg.run_series_ignored", "volume/api.py",
           "on = run_series(p if run is None else run)", "on = None",
           ("tests/volume/test_dicom_seg_in.py",),
           "`diffseg evaluate volume` cannot read a run's own DICOM-SEG output unless told its series"),
    Mutant("dicom_seg.listed_as_a_series", "volume/dicom.py",
           'or str(ds.get("SOPClassUID", "")) == SEG_STORAGE:', ":",
           ("tests/volume/test_dicom_seg_in.py",),
           "a study folder exported with its segmentation: `diffseg volume` asks which of two series to read"),
    Mutant("dicom_seg.highdicom_chatter", "diffseg/cli.py",
           '"lightning_fabric", "highdicom"):', '"lightning_fabric"):',
           ("tests/volume/test_dicom_seg_in.py",),
           "writing a DICOM-SEG prints a dozen lines of highdicom's log per command"),
    Mutant("dicom_seg.join_not_renumbered", "volume/api.py",
           'if fmt == "dicom-seg" and ids != list(range(1, len(ids) + 1)):', "if False:",
           ("tests/volume/test_dicom_seg_in.py",),
           "`diffseg join` of a DICOM run's DICOM-SEG fails after the work: segment numbers must be 1..n"),
    Mutant("join_volume.axis_ignored", "volume/api.py",
           'axis = int(doc.get("slicing_axis") or 0)', "axis = 0",
           ("tests/volume/test_join_volume.py",),
           "a volume linked along x or y is joined along z, across its pieces' cut"),
    Mutant("join_volume.grey_ignored", "volume/api.py",
           "ex.add(np.asarray(take_slice(lab, axis, i)), gray(axis, i))",
           "ex.add(np.asarray(take_slice(lab, axis, i)), None)",
           ("tests/volume/test_join_volume.py",),
           "neighbouring structures of unlike grey join wherever their boundary wobbles"),
    Mutant("join_volume.names_not_carried", "volume/api.py",
           "        names[root] = names[donor]\n", "        pass\n",
           ("tests/volume/test_join_volume.py",),
           "a joined label loses the name its named piece had"),
    Mutant("join_volume.image_index_ignored", "volume/api.py",
           "image = read_volume(image_path, index=index, series=series)", "image = read_volume(image_path)",
           ("tests/volume/test_join_volume.py",),
           "a run of a 4-D file's volume or a DICOM folder's series: the join cannot read its image"),
    Mutant("join_volume.run_window_ignored", "volume/api.py",
           "    gray = gray_slices(image, look)", "    gray = gray_slices(image, VolumeConfig())",
           ("tests/volume/test_join_volume.py",),
           "a run windowed with --window is joined on other grey levels than it was linked on"),
    Mutant("ids.sparse_ids_by_position", "volume/postprocess.py",
           "out.append(LabelInfo(id=i + 1 if ids is None else int(ids[i]),", "out.append(LabelInfo(id=i + 1,",
           ("tests/volume/test_postprocess_eval.py",),
           "labels.json of a volume with another tool's large ids lists them as 1, 2, 3..."),
    Mutant("ids.sparse_boxes_by_position", "volume/postprocess.py",
           "return {i + 1 if ids is None else int(ids[i]): box", "return {i + 1: box",
           ("tests/volume/test_postprocess_eval.py",),
           "`diffseg evaluate volume` of labels with large ids fails on their surface scores"),
    Mutant("dicom_seg.stack_not_placed_on_image", "volume/api.py",
           'on=image if image is not None and image.meta.get("dicom_files") else None)', "on=None)",
           ("tests/volume/test_dicom_seg_in.py",),
           "`diffseg stack` of a DICOM-SEG without its empty slices is refused even with its series as --image"),
    Mutant("dicom_seg.unplaced_output_as_seg", "volume/io.py",
           '    elif fmt == "dicom-seg" and not vol.meta.get("dicom_files"):', '    elif False:',
           ("tests/volume/test_dicom_seg_in.py",),
           "`diffseg stack` of a DICOM-SEG into a folder asks for labels.dcm, then refuses to write it"),
    Mutant("video.gif_refused", "temporal/io.py",
           "                return _PyAVVideo(self.path)\n            except _StillImage:",
           "                raise InputError(f\"{self.path}: cannot open video\")\n            except _StillImage:",
           ("tests/temporal/test_pyav_reader.py",),
           "an animated GIF is refused as a video decord cannot open"),
    Mutant("video.still_image_as_video", "temporal/io.py",
           'if fmt == "image2" or fmt.endswith("_pipe"):', "if False:",
           ("tests/test_fuzz.py", "tests/temporal/test_pyav_reader.py"),
           "a PNG named .mp4 is segmented as a one-frame video instead of refused"),
    Mutant("video.display_rotation_ignored", "temporal/io.py",
           '    return round(float(getattr(frame, "rotation", 0) or 0) / 90) % 4', "    return 0",
           ("tests/temporal/test_pyav_reader.py",),
           "a phone video stored on its side is refused (decord's frames of the turned size) or read sideways"),
    Mutant("video.turned_the_wrong_way", "temporal/io.py",
           "arr = np.ascontiguousarray(np.rot90(arr, turns))", "arr = np.ascontiguousarray(np.rot90(arr, -turns))",
           ("tests/temporal/test_pyav_reader.py",),
           "a phone video stored on its side is turned the wrong way"),
    Mutant("video.frozen_frame_counted_resumed", "temporal/api.py",
           "self.hits += p.name in self._earlier", "self.hits += 1",
           ("tests/test_resume.py",),
           "a fresh run of a video with frozen frames says it resumed segmentations"),
    Mutant("volume.rgb_tiff_slices_as_volumes", "volume/io.py",
           '        ax = axes.index("S") if "S" in axes else extra[0] if extra else 0',
           "        ax = extra[0] if extra else 0",
           ("tests/volume/test_io.py",),
           "an RGB TIFF stack's slices are taken for volumes (QYXS): --index 0 segments slices 3 pixels wide"),
    Mutant("volume.rgb_npy_as_volumes", "volume/io.py",
           "    if arr.ndim == 4 and arr.shape[3] in (3, 4) and arr.shape[3] < min(arr.shape[1:3]):",
           "    if False:",
           ("tests/volume/test_io.py",),
           "an (N, H, W, 3) .npy is read as N volumes of width 3"),
    Mutant("dicom.multiframe_refused", "volume/dicom.py",
           "            if len(info.files) == 1:", "            if False:",
           ("tests/volume/test_dicom_multiframe.py",),
           "an enhanced (multi-frame) CT / MR is refused"),
    Mutant("dicom.seg_on_multiframe_from_first_slice", "volume/dicom.py",
           "    out[k0:k0 + data.shape[0]] = data", "    out[:data.shape[0]] = data",
           ("tests/volume/test_dicom_multiframe.py",),
           "a DICOM-SEG without its empty slices lands on the wrong slices of a multi-frame series"),
    Mutant("video.decord_log_line_as_error", "temporal/io.py",
           "                raise refused from exc\n",
           "                raise InputError(f\"{self.path}: cannot open video ({exc})\") from exc\n",
           ("tests/temporal/test_pyav_reader.py",),
           "a file decord cannot open is refused with decord's C++ log line instead of FFmpeg's words"),
    Mutant("volume.slice_folder_as_dicom", "volume/io.py",
           '        return "slices" if slice_files(p) else "dicom"', '        return "dicom"',
           ("tests/volume/test_slice_folder.py",),
           "a folder of slice images is refused (no DICOM image files found)"),
    Mutant("volume.slices_in_plain_name_order", "volume/io.py",
           "    return sorted(slices, key=lambda q: natural_key(q.name))", "    return sorted(slices)",
           ("tests/volume/test_slice_folder.py",),
           "slice_10 is read before slice_2"),
    Mutant("volume.picture_in_dicom_folder_as_slices", "volume/io.py",
           "    if not slices or any(_is_dicom_file(q) for q in files if q.suffix.lower() not in SLICE_EXTS):",
           "    if not slices:",
           ("tests/volume/test_slice_folder.py",),
           "a DICOM folder with a screenshot in it is read as a folder of one slice"),
    Mutant("nrrd.space_ignored", "volume/io.py",
           "        to_ras = np.diag([*_NRRD_SPACES[space], 1.0])", "        to_ras = np.eye(4)",
           ("tests/volume/test_nrrd.py",),
           "an NRRD in LPS (as 3D Slicer writes it) is read mirrored in x and y"),
    Mutant("nrrd.written_in_ras_as_lps", "volume/io.py",
           "    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk", "    lps = ijk",
           ("tests/volume/test_nrrd.py",),
           "NRRD labels are written mirrored against their image"),
    Mutant("cli.ctrl_c_left_ignored_for_the_caller", "diffseg/cli.py",
           '''        print(f"diffseg {args.command}: interrupted", file=sys.stderr)\n        return 130''',
           '''        signal.signal(signal.SIGINT, signal.SIG_IGN)\n        print(f"diffseg {args.command}: interrupted", file=sys.stderr)\n        return 130''',
           ("tests/test_outputs_safety.py",),
           "after an interrupt, diffseg.cli.main leaves Ctrl-C ignored in the caller's process (a notebook)"),
    Mutant("cli.ctrl_c_in_torch_import", "diffseg/cli.py",
           "            with interrupts_held():", "            with contextlib.nullcontext():",
           ("tests/test_outputs_safety.py",),
           "Ctrl-C in a command's first seconds aborts it (pybind11 terminate) with no clean-up"),
    Mutant("cli.memory_hint_everywhere", "diffseg/cli.py",
           'hint = f" (try a smaller {\' or \'.join(flags)})" if flags else ""',
           'hint = " (try a smaller --size or --batch-size)"',
           ("tests/test_outputs_safety.py",),
           "`diffseg evaluate` out of memory tells the user to lower options it does not have"),
    Mutant("join_volume.stack_join_unchecked", "volume/cli.py",
           '    _check_join(args, cfg, "stack")\n    with _warnings_as_lines("stack"):', '    with _warnings_as_lines("stack"):',
           ("tests/volume/test_join_volume.py",),
           "`stack --join` without --image links the whole stack, then fails"),
    Mutant("join.run_setting_ignored", "diffseg/distributed.py",
           'if getattr(found[prefix], "join", None) is not None:', "if False:",
           ("tests/test_settings.py",),
           "`diffseg run --set video.join=DIR` is accepted and nothing is joined"),
    Mutant("join.napari_join_ignored", "diffseg/napari_plugin.py",
           "return _joined(out.astype(np.int32), [grey(0, i) for i in range(len(out))]) if join else",
           "return out.astype(np.int32) if join else",
           ("tests/test_napari_plugin.py",),
           "the napari link widget's join box does nothing on a stack"),
    Mutant("join_volume.stack_image_not_recorded", "volume/api.py",
           '**_image_record(image_path, config)})',
           '"image": None})',
           ("tests/volume/test_join_volume.py",),
           "a stack run forgets its image: `diffseg join` on it asks for --image"),
    Mutant("volume_dice.no_factor_two", "volume/evaluate.py",
           "dice[int(gid)] = float(2 * table[i + 1, j + 1] / (g_tot[i] + p_tot[j]))",
           "dice[int(gid)] = float(table[i + 1, j + 1] / (g_tot[i] + p_tot[j]))",
           VOLUME, "Dice halved"),
    Mutant("volume_dice.match_on_intersection", "volume/evaluate.py",
           "r, c = linear_sum_assignment(-dice)", "r, c = linear_sum_assignment(-inter)",
           VOLUME, "matching maximises raw overlap: a huge prediction wins over the right one"),
    Mutant("oracle_dice.pred_area_ignored", "volume/evaluate.py",
           "        pred_sum[rows] += t[:, 1:].sum(0)[match[hit]]\n", "",
           VOLUME, "oracle Dice ignores the predicted area (inflated oracle)"),
    # ------------------------------------------------------------------ linking
    Mutant("tracks.retire_late", "temporal/tracks.py",
           "if t.missed > self.max_missed:", "if t.missed > self.max_missed + 1:",
           TEMPORAL, "a track retires one frame after max_missed"),
    Mutant("tracks.retire_early", "temporal/tracks.py",
           "if t.missed > self.max_missed:", "if t.missed >= self.max_missed:",
           TEMPORAL, "a track retires one frame before max_missed"),
    Mutant("tracks.ids_reused", "temporal/tracks.py",
           "t = Track(id=self.next_id, first_frame=frame_index, last_frame=frame_index)",
           "t = Track(id=max(self.tracks, default=0) + 1, first_frame=frame_index, last_frame=frame_index)",
           TEMPORAL, "a retired track's id can be handed out again"),
    Mutant("tracker.bilinear_upscale", "temporal/tracker.py",
           "return cv2.resize(a, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)",
           "return cv2.resize(a.astype(np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR).astype(a.dtype)",
           TEMPORAL, "ids blended at object borders when frames are larger than the work size"),
    Mutant("tracker.keyframe_cover_ignored", "temporal/tracker.py",
           "                if (kept[big] < min_cover * key[big]).any():\n",
           "                if False:\n",
           TEMPORAL, "--keyframe-every auto carries frames the flow has lost: objects left behind"),
    Mutant("tracker.keyframe_chain_through_guesses", "temporal/tracker.py",
           "                    chained &= p.valid\n",
           "                    pass\n",
           TEMPORAL, "--keyframe-every auto: the motion model's guess for a lost track counts as a chain"),
    Mutant("predict.colour_check_grey", "temporal/engine/predict.py",
           "valid = colour_check(prev_rgb, rgb, bwd, self.cfg.colour_tolerance, src=src)",
           "valid = colour_check(prev_gray, gray, bwd, self.cfg.colour_tolerance, src=src)",
           TEMPORAL, "a flow that fell behind an object as bright as the ground goes unseen (ids switch, keyframes drift)"),
    Mutant("flow.dis_small_frames_unpadded", "temporal/flow.py",
           "if min(h, w) >= DIS_MIN_SIDE:", "if True:",
           TEMPORAL, "a video narrower than 32 px on a side stops with an OpenCV error or crashes the process"),
    Mutant("evaluate.video_run_folder_ignored", "temporal/evaluate.py",
           "        d = d / LABELS_DIR  # the output folder", "        d = d  # the output folder",
           TEMPORAL, "`diffseg evaluate video OUT/ GT/` on a run's output folder: no label maps found"),
    Mutant("evaluate.volume_run_folder_ignored", "volume/api.py",
           "            return found[0]\n    return d", "            return d\n    return d",
           VOLUME, "`diffseg evaluate volume OUT/ GT` on a run's output folder: taken for a DICOM folder"),
    Mutant("tracker.frames_left_over_unchecked", "temporal/tracker.py",
           "                if seg is _END:\n", "                if seg is _END and False:\n",
           TEMPORAL, "more frames than segmentations: the error is not the one that names the mismatch"),
    Mutant("tracker.segmentations_left_over_unchecked", "temporal/tracker.py",
           "            if next(segs, _END) is not _END:\n", "            if False:\n",
           TEMPORAL, "more segmentations (label maps) than frames: what is left is dropped silently"),
    Mutant("api.decode_failure_read_as_mismatch", "temporal/api.py",
           "seg_iter = _segs_until_failure(segs_for(pending, ended), failure)", "seg_iter = segs_for(pending, ended)",
           TEMPORAL, "linking saved segmentations of a video that fails to decode part-way stops with a length "
           "error instead of keeping the frames before the failure"),
    Mutant("api.track_segments_endless", "temporal/api.py",
           "            if not pending or ended:\n", "            if not pending:\n",
           TEMPORAL, "`diffseg track` stops with a length error at the end of every video"),
    Mutant("matching.cell_weights_swapped", "temporal/matching.py",
           "np.array([[bins * bins, bins, 1]], np.float32)", "np.array([[bins, bins * bins, 1]], np.float32)",
           TEMPORAL, "red and green swap places in every colour histogram (cells of other colours collide)"),
    Mutant("flow.colour_check_one_channel", "temporal/flow.py",
           "bound = (tol,) * (img.shape[2] if img.ndim == 3 else 1)",
           "bound = (tol,) + (255,) * (img.shape[2] - 1 if img.ndim == 3 else 0)",
           TEMPORAL, "the colour check reads the red channel only"),
    Mutant("predict.colour_check_off", "temporal/engine/predict.py",
           "valid = colour_check(prev_rgb, rgb, bwd, self.cfg.colour_tolerance, src=src)",
           "valid = np.ones(bwd.shape[:2], bool)",
           TEMPORAL, "a flow that fell behind a small fast object moves its id onto the ground"),
    Mutant("capture.first_head_only", "diffseg_core/capture.py",
           "            torch.sum(probs.view(batch, heads, c, n_k), dim=1, dtype=hdt, out=hsum)\n",
           "            hsum.copy_(probs.view(batch, heads, c, n_k)[:, 0] * heads)\n",
           CORE, "the maps are one head's, not the mean of all heads"),
    Mutant("engine.velocities_never_settled", "temporal/engine/linker.py",
           "        settle_velocities(reg.tracks.values(), keep=velocity)\n", "        pass\n",
           TEMPORAL, "every earlier frame's flow stays in memory while a track last measured there lives"),
    Mutant("engine.no_reidentification", "temporal/engine/linker.py",
            "        if not (len(remembered) and K):\n", "        if True:\n",
           TEMPORAL, "an object back from an occlusion always gets a new id"),
    Mutant("engine.no_part_of", "temporal/engine/associate.py",
           "        ok[extra[top[extra] <= cfg.split_cost]] = False\n",
           "        ok[extra] = False\n",
           TEMPORAL, "with a split cost, a track takes only its best segment: a split object gets a second id"),
    Mutant("engine.no_carving", "temporal/engine/associate.py",
           "    for j in np.flatnonzero((inter[:, 1:][:, lost] > 0).any(1) & (whole < T)):",
           "    for j in []:",
           TEMPORAL, "an object merged into a neighbour's segment or the ground loses its id"),
    Mutant("engine.split_cost_ignored", "temporal/engine/associate.py",
           "    if cfg.split_cost > 0:", "    if False:",
           TEMPORAL, "a structure starting inside another's mask joins it as a piece"),
    Mutant("engine.no_min_iou", "temporal/engine/associate.py",
           "    if cfg.min_iou > 0:  # sections", "    if False:  # sections",
           TEMPORAL + VOLUME, "a section that grows from its tip is taken for a new structure"),
    Mutant("engine.slices_carving_by_part_gains", "temporal/engine/associate.py",
           "    if cfg.min_iou > 0:  # slices:", "    if False:  # slices:",
           TEMPORAL, "a grown section's new pixels read as foreign: it goes to the ground's lost track"),
    Mutant("engine.section_score_without_threshold", "temporal/engine/associate.py",
           "* lam - min_iou, 0.0)", "* lam, 0.0)",
           TEMPORAL, "a lost big track swallows a small structure that starts inside its section"),
    Mutant("engine.slices_gaec_unchecked", "temporal/engine/associate.py",
           "            labs = np.stack([_gaec_labels(w, A, Tj), np.full(A, mine_o), np.full(A, Tj)])",
           "            labs = _gaec_labels(w, A, Tj)[None]",
           TEMPORAL, "a big segment's slivers are carved into lost tracks the section score says are not there"),
    Mutant("engine.carving_without_look", "temporal/engine/associate.py",
           "    if ev.look is None:  # nothing but the segmenter's word: its grouping stands\n        return Association(owner, whole)\n",
           "", TEMPORAL + VOLUME, "a structure that ended is carved out of the ground from memory"),
    Mutant("engine.owner_not_carvable", "temporal/engine/associate.py",
           "np.where(carvable | is_o, lam[j], 0.0)", "lam[j] * carvable",
           TEMPORAL, "a track that lived by carving loses the segment it continues in to a new id"),
    Mutant("engine.carving_ignores_the_owner", "temporal/engine/associate.py",
           "            lj = np.where((ev.look[j] > rival) | is_o, lj, 0.0)\n", "",
           TEMPORAL, "the place of an object that ended or hid is carved out of its neighbour: a ghost track"),
    Mutant("evidence.owner_look_of_another_track", "temporal/engine/evidence.py",
           "self.root[a:b] @ self.track_root[o]", "self.root[a:b] @ self.track_root[0]",
           TEMPORAL, "a part is compared with the first track instead of its segment's owner"),
    Mutant("volume.no_late_corrections", "volume/api.py",
           ", i) if r.absorbed else ():", ", i) if False else ():",
           VOLUME, "slices already linked keep the id of a piece folded later"),
    Mutant("engine.areas_of_parts_not_pixels", "temporal/engine/linker.py",
           "weights=ev.inter.ravel(), minlength=1)", "minlength=1)",
           TEMPORAL, "the next prediction judges lost tracks by how many parts they had, not pixels"),
    Mutant("engine.stale_areas_after_propagation", "temporal/tracker.py",
           "state.link.prev, state.link.prev_area = self._resize(out, state.work_hw), None",
           "state.link.prev = self._resize(out, state.work_hw)",
           TEMPORAL, "after a propagated frame the prediction counts the keyframe's areas"),
    Mutant("associate.exact_pairs_misaligned", "temporal/engine/associate.py",
           "    same = combos[:, iu] == combos[:, ju]\n", "    same = combos[:, iu] == combos[:, iu[::-1]]\n",
           TEMPORAL, "the enumeration charges the cut between the wrong pairs of parts"),
    Mutant("engine.no_folds", "temporal/engine/linker.py",
           "            absorbed = folds(groups, reg, idx, self.cfg.lifecycle,",
           "            absorbed = {} or folds([], reg, idx, self.cfg.lifecycle,",
           TEMPORAL, "a young piece of an older track keeps its own id when the object is whole again"),
    Mutant("flow.warp_backwards", "temporal/flow.py",
           "src = sources(flow) if src is None else src\n    out = cv2.remap(labels, src,",
           "src = sources(-flow)\n    out = cv2.remap(labels, src,",
           TEMPORAL, "labels moved against the motion"),
    Mutant("flow.colours_not_compared", "temporal/flow.py",
           "    ok = cv2.inRange(cv2.absdiff(img, was), (0,) * len(bound), bound) > 0\n",
           "    ok = np.ones(img.shape[:2], bool)\n",
           TEMPORAL, "occluded pixels keep the ids the flow brings them (only the frame edge is checked)"),
    Mutant("run.link_per_chunk", "diffseg/distributed.py",
           "        for stem in stems[max(0, len(segs) - c.start):]:",
           "        for stem in stems[:0]:",
           JOBS, "a chunked video is not linked over all its chunks"),
    Mutant("video.size_change_unchecked", "temporal/io.py",
           "            self._check_one_frame_size(sizes)\n", "",
           ("tests/test_fuzz.py",), "a video whose frame size changes is silently resized to the first size"),
    Mutant("volume.no_fragment_removal", "volume/api.py",
           "st = remove_fragments(labels, int(config.min_size),",
           "st = remove_fragments(labels, 0,",
           VOLUME, "3D debris kept as labels"),
    Mutant("volume.fusion_no_vote", "volume/fusion.py",
           "        r[agree] = a[agree]\n", "",
           VOLUME, "--axes all returns the reference axis unchanged"),
    Mutant("omezarr.index_ignored", "volume/omezarr.py",
           "        fixed[a] = int(index)\n", "",
           ("tests/volume/test_omezarr.py",), "--index of a time / channel axis reads the first volume"),
    Mutant("omezarr.pyramid_blends", "volume/omezarr.py",
           "                arr[sl] = block[:, ::f, ::f]",
           "                arr[sl] = block.reshape(block.shape[0], -1)[:, :(-(-h // f)) * (-(-w // f))]"
           ".reshape(block.shape[0], -(-h // f), -(-w // f))",
           ("tests/volume/test_omezarr.py",), "the pyramid's coarser levels are not the labels' pixels"),
    Mutant("omezarr.written_in_place", "volume/omezarr.py",
           "    tmp = temporary_name(path)\n", "    tmp = path\n    shutil.rmtree(path, ignore_errors=True)\n",
           ("tests/volume/test_omezarr.py",), "an interrupted write destroys the previous result"),
    Mutant("davis.decay_bins_disjoint", "temporal/evaluate.py",
           "    bins = [v[edges[i]:edges[i + 1] + 1] for i in range(4)]",
           "    bins = [v[edges[i]:edges[i + 1]] for i in range(4)]",
           ("tests/temporal/test_evaluate.py",), "Decay's bins without their shared end frames"),
    Mutant("davis.void_predicted", "temporal/evaluate.py",
           "            pred = np.where(vm, 0, pred)  # a void pixel is in no prediction either\n",
           "            pass\n",
           ("tests/temporal/test_evaluate.py",), "a prediction over void pixels counts against J"),
    Mutant("surface.hd95_smaller_direction", "volume/evaluate.py",
           "hd95[gid] = float(max(np.percentile(da, 95), np.percentile(db, 95)))",
           "hd95[gid] = float(min(np.percentile(da, 95), np.percentile(db, 95)))",
           ("tests/volume/test_postprocess_eval.py",), "HD95 of the kinder direction only"),
    Mutant("instances.below_threshold_counted", "volume/evaluate.py",
           "        tp = int(ok[r, c].sum())", "        tp = int((iou[r, c] > 0).sum())",
           ("tests/volume/test_postprocess_eval.py",), "instance pairs under IoU 0.5 counted as found"),
    # ------------------------------------------------------------------ job manifest
    Mutant("manifest.outputs_not_checked", "diffseg/jobs.py",
           "return all((self.out_dir / o).exists() for o in rec.outputs)", "return True",
           JOBS, "an item whose outputs were deleted is skipped on rerun"),
    Mutant("manifest.hash_not_checked", "diffseg/jobs.py",
           "if rec is None or rec.status != \"done\" or rec.config_hash != chash:",
           "if rec is None or rec.status != \"done\":",
           JOBS, "changing a setting does not redo the items"),
    Mutant("manifest.done_before_outputs", "diffseg/distributed.py",
           "    outputs = list(res.outputs)\n    status, error = res.status, res.error\n",
           "    outputs = list(res.outputs)\n    status, error = res.status, res.error\n"
           "    if status == \"done\" and res.labels is not None:\n"
           "        manifest.put(ItemRecord(key=res.item.key, kind=res.item.kind, source=res.item.source,\n"
           "                                status=\"done\", config_hash=chash, outputs=[],\n"
           "                                error=None, frames=res.frames, seconds=0.0, rank=rank))\n",
           JOBS, "a kill between the record and the files leaves an item marked done with no outputs"),
    Mutant("manifest.hash_ignores_tracker", "diffseg/distributed.py",
           "common.update(tracker=self.tracker, max_side=self.max_side, chunk_frames=self.chunk_frames,",
           "common.update(max_side=self.max_side, chunk_frames=self.chunk_frames,",
           JOBS, "changing tracker options does not redo the videos"),
    Mutant("jobs.shard_duplicates", "diffseg/jobs.py",
           "        if r == rank:\n            mine.append(it)",
           "        if r == rank or it.cost == 1:\n            mine.append(it)",
           JOBS, "small items run on every rank"),
]


def _copy_tree(dst: Path) -> None:
    """Copy the tracked and untracked-but-not-ignored files of the repository to ``dst``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for f in files:
        if not f:
            continue
        src = REPO / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)


def run_mutant(m: Mutant, timeout: float) -> tuple[str, float, str]:
    """Plant ``m`` in a copy of the tree and run its tests.

    Returns:
        ``(verdict, seconds, detail)`` with verdict ``killed``, ``SURVIVED``, ``stale``
        (the text to replace is not in the file, exactly once) or ``timeout``.
    """
    src = (REPO / m.path).read_text("utf-8")
    if src.count(m.old) != 1:
        return "stale", 0.0, f"{m.path}: the text occurs {src.count(m.old)} times"
    with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
        root = Path(tmp)
        _copy_tree(root)
        (root / m.path).write_text(src.replace(m.old, m.new), "utf-8")
        env = dict(os.environ, PYTHONPATH=str(root), DIFFSEG_SHARED=str(root / "no-shared"),
                   PYTHONDONTWRITEBYTECODE="1")
        t0 = time.perf_counter()
        try:
            p = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                *m.tests], cwd=root, env=env, capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout", time.perf_counter() - t0, ""
        dt = time.perf_counter() - t0
        tail = [ln for ln in p.stdout.splitlines() if ln.startswith("FAILED") or ln.startswith("ERROR")]
        if p.returncode == 0:
            return "SURVIVED", dt, ""
        if p.returncode == 5:
            return "stale", dt, "no tests collected"
        return "killed", dt, tail[0] if tail else p.stdout.strip().splitlines()[-1:][0] if p.stdout.strip() else ""


def main(argv: "list[str] | None" = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="run the mutants whose name contains this text")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant [%(default)s]")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if args.only in m.name]
    if args.list:
        for m in chosen:
            print(f"{m.name:40s} {m.path:28s} {m.why}")
        return 0
    counts: dict[str, int] = {}
    t_all = time.perf_counter()
    for m in chosen:
        verdict, dt, detail = run_mutant(m, args.timeout)
        counts[verdict] = counts.get(verdict, 0) + 1
        print(f"{verdict:8s} {dt:6.1f}s  {m.name:40s} {detail[:110]}", flush=True)
    print(f"\n{len(chosen)} mutants: " + ", ".join(f"{v} {n}" for v, n in sorted(counts.items()))
          + f" ({time.perf_counter() - t_all:.0f} s; ../shared hidden, as in a user's clone)")
    return 1 if counts.get("SURVIVED") or counts.get("stale") else 0


if __name__ == "__main__":
    raise SystemExit(main())
