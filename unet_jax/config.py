"""The base configuration every file in `configs/` starts from.

Keys are nouns with units. `batch_size` is global (all devices of all hosts). Variants import
`get_base_config()` and change what they need. No value is derived from another, so a
command-line override such as `--config.num_train_steps=500` changes that value alone. The valid
values of each key that names a choice are in options.py.

`RESUMABLE` marks the keys that may change when a run resumes (training/run_record.py refuses a
resume that changes any other); the comment above each group says why it may.
"""

import ml_collections
from ml_collections import config_dict


def get_base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  # enhance: paired colour grading; denoise: clean -> noisy made on the fly; segment: masks.
  config.task = 'enhance'

  config.model = model = ml_collections.ConfigDict()
  model.levels = 4  # number of down-sampling steps; input is padded to a multiple of 2**levels
  model.base_channels = 32
  model.max_channels = 512  # channels double per level up to this cap
  model.in_channels = 3
  model.norm = 'batch'  # batch | group | layer | none
  # How BatchNorm computes (same variables either way): auto is gemm (matrix-product sums, faster
  # on XLA:CPU) on CPU and flax (flax.linen.BatchNorm) on GPU and TPU.
  model.batch_norm = 'auto'
  model.group_norm_groups = 8
  model.activation = 'relu'  # relu | gelu | silu
  model.down = 'maxpool'  # maxpool | strided
  model.up = 'bilinear'  # bilinear | transposed | pixel_shuffle
  model.skip = 'concat'  # concat | none
  model.attention_gates = False
  model.multiscale_input = False
  # What the bottleneck mixes in: none | pooled (its own features, pooled over the photo) |
  # thumbnail (the thumbnail encoder's vector of the photo's thumbnail).
  model.global_context = 'none'
  # The output head follows config.task: segment has the segmentation head (logits over
  # num_classes), enhance and denoise the image head (out_channels).
  model.residual = True  # output = input + unet(input); the image head only (segment ignores it)
  model.out_channels = 3  # image head
  model.num_classes = 2  # segmentation head
  model.dtype = 'float32'  # compute dtype: float32 | bfloat16 (params stay float32)
  # Recompute each conv block's activations in the backward pass (less memory, ~1/3 more work).
  model.remat = False
  # Global colour head (models/global_grade.py): none | lut (one learned 3D LUT) | adaptive_lut
  # (lut_bases tables mixed per photo from its thumbnail). The U-Net's edit goes on top.
  model.color_head = 'none'
  model.lut_size = 17  # lattice points per axis (17 or 33)
  model.lut_bases = 3  # adaptive_lut
  model.lut_method = 'auto'  # auto (matmul on TPU, gather elsewhere) | gather | matmul
  model.unet_input = 'input'  # input | lut: the U-Net reads the photo, or the LUT's grade
  # What the thumbnail_size square thumbnail (and its metering figures) that the global branch
  # reads in training shows: the training crop itself (crop), or the whole photo it was cut
  # from (photo), as at predict, where it is always the whole photo.
  model.thumbnail = 'crop'
  model.thumbnail_size = 64
  # The thumbnail's metering figures (log-luminance key, spread, percentiles, colour cast)
  # join the context vector: exposure-adaptive edits (whole_photo.photo_statistics).
  model.thumbnail_stats = False
  model.coords = False  # (y, x) whole-photo coordinates as two extra input channels
  # A learned per-channel gain over the frame, frame_gain^2 lattice points (0: off), on the
  # colour head's grade: vignettes and graduated filters, the same in crops and tiles.
  model.frame_gain = 0
  # A per-photo exposure in linear light (stops read off the thumbnail's metering figures,
  # clipped to +-exposure_range_ev, then a learned highlight roll-off) before the colour head.
  # Needs thumbnail='photo'.
  model.exposure = False
  model.exposure_range_ev = 2.0
  # Per-photo levels (models/auto_levels.py): a black and white point, gamma and gain per channel
  # chosen from each whole photo's histogram, as an editor's auto levels or grey-world white
  # balance chooses them. First in the grade. Needs thumbnail='photo'.
  model.auto_levels = False
  # A learned per-channel offset after the levels, in 8-bit steps: targets an editor wrote by
  # truncating to 8 bits sit half a step low (models/auto_levels.py). Needs auto_levels.
  model.auto_levels_offset = False
  # Per-photo tone curves (models/tone_curves.py), `curves` knots per channel (0: off), read off
  # each whole photo's histogram: what an editor's auto levels or white balance set per photo.
  model.curves = 0
  # A local_grid^2 grid of per-pixel colour transforms read off the whole photo's thumbnail
  # (models/local_affine.py; 0: off): large-radius local looks (local contrast, glows).
  # Needs thumbnail='photo' and thumbnail_size / local_grid a power of two.
  model.local_grid = 0
  # Whether the local grid's network also reads the thumbnail's local means and spreads over
  # two windows (1/32 and 1/16 of the frame): for local normalisations, which divide by a
  # neighbourhood's spread. Needs local_grid.
  model.local_grid_statistics = False
  # Whether the thumbnail also carries each of its pixels' darkest and brightest values, and the
  # local grid's network reads their extremes over the same windows and the inverse of their
  # range: for local min-max stretches, whose range a thumbnail's averages lose. Needs local_grid.
  model.local_grid_extremes = False
  # Whether each pixel's local transform also weighs its detail: the photo minus the local means
  # (and, with the extremes, its place between the local darkest and brightest values) over the
  # same windows, sliced from the thumbnail: a local contrast is then one transform over the
  # frame (models/local_affine.py). Needs local_grid.
  model.local_grid_detail = False

  config.loss = loss = ml_collections.ConfigDict()
  # Weights of the combined loss; 0 switches a term off. The seed's best practice:
  # l1 + 0.1 * perceptual + 0.1 * (1 - ssim).
  loss.l1 = 1.0
  loss.l2 = 0.0
  loss.charbonnier = 0.0
  loss.ssim = 0.1
  loss.ms_ssim = 0.0
  loss.perceptual = 0.1
  loss.perceptual_network = 'vgg16'  # vgg16 | vgg19
  # Per-layer weights of the perceptual loss, shallow to deep; None means equal weights.
  loss.perceptual_layer_weights = config_dict.placeholder(tuple)
  loss.vgg_weights_path = config_dict.placeholder(str)  # None: built-in ImageNet VGG16
  loss.charbonnier_epsilon = 1e-3
  # On the colour head's 3D LUT: total variation and monotonicity (Zeng et al.), and the
  # curvature (second differences), which leaves affine grades alone.
  loss.lut_smoothness = 1e-4
  loss.lut_curvature = 0.0
  loss.lut_monotonicity = 10.0
  # Second differences of the frame gain's lattice over the frame.
  loss.frame_gain_curvature = 0.0
  # L1 of the global grade alone (colour head, frame gain; before the U-Net's edit) against
  # the target: the grade then takes every global part of the edit, the U-Net the local rest.
  loss.global_grade = 0.0
  # L1 of the auto levels' output alone (model.auto_levels, the grade's first stage) against the
  # target: the stage is fitted as the editor's auto tools set levels, the rest grades on top.
  loss.auto_levels = 0.0
  # L1 of the grade under the U-Net applied to the whole photo at thumbnail size (the input's
  # thumbnail graded, against the target's): large-radius parts (the local grid, the frame
  # gain) see the whole frame in every step instead of the few cells a crop covers. Needs
  # model.thumbnail='photo' and a grade that reads the thumbnail's size.
  loss.whole_photo_grade = 0.0
  # Segmentation.
  loss.cross_entropy = 1.0
  loss.dice = 0.0
  loss.ignore_label = 255

  config.data = data = ml_collections.ConfigDict()
  data.name = 'builtin'  # builtin | paired_folders | tfds name (e.g. oxford_iiit_pet)
  data.dir = config_dict.placeholder(str)  # root of the user's pairs (paired_folders)
  # None: <workdir>/tfds for paired folders and tfds datasets (data.tfds_dir decides).
  data.tfds_data_dir = config_dict.placeholder(str)
  data.look = 'local_contrast'  # built-in grading look (builtin dataset)
  # RGB space the model learns and grades in: srgb | display_p3 | adobe_rgb | prophoto_rgb.
  # Every file's ICC profile is converted to it on reading (untagged files are sRGB).
  data.working_space = 'srgb'
  data.noise_sigma = 25.0 / 255.0  # denoise task, on [0, 1] images
  data.crop_size = 256
  data.sampling = 'crop'  # crop | resize | mixed (whole image resized, or a random crop)
  data.hflip = True
  data.vflip = False
  data.rot90 = False
  data.max_rotation_degrees = 0.0
  data.num_workers = 0  # grain worker processes; 0 decodes in the main process
  # Keep decoded training photos in memory (data/photo_cache.py), up to this many MB (0: off):
  # a few hundred photos are otherwise decoded and metered again for every crop.
  data.photo_cache_mb = 0
  data.prefetch_buffer_size = 2
  data.bad_pair_policy = 'error'  # error | skip
  # A file whose header claims more pixels is refused before decoding (decompression bombs).
  data.max_pixels = 200_000_000
  data.eval_size = config_dict.placeholder(int)  # None: evaluate at full resolution
  data.train_split = 'train'
  data.eval_split = 'test'

  config.batch_size = 8  # global
  config.num_train_steps = 10_000
  config.optimizer = opt = ml_collections.ConfigDict()
  opt.learning_rate = 2e-4
  opt.warmup_steps = 500
  opt.end_learning_rate_factor = 0.01
  opt.weight_decay = 1e-4
  opt.b1 = 0.9
  opt.b2 = 0.99
  opt.grad_clip_norm = 1.0
  opt.ema_decay = 0.999  # 0 disables EMA
  # Step size of the global grade's parameters (colour head tables, frame gain) relative to the
  # rest: few parameters that every pixel informs, so they can move faster than conv kernels.
  opt.global_grade_lr_factor = 1.0
  # ... and of the exposure stage's two parameters on top of that: numbers that must travel far
  # (about -1.44 stops per stop of key to undo a meter) on noisy gradients.
  opt.exposure_lr_factor = 1.0
  # Steps at the start in which only the global branch (exposure, colour head, frame gain and
  # the thumbnail encoder) learns and the U-Net holds still, so the U-Net learns only what the
  # global grade cannot do (0: all learn from the start).
  opt.grade_first_steps = 0
  # Fit the auto levels alone to the training pairs before the first step (Levenberg-Marquardt
  # on a sample of each whole pair's pixels, training/levels_prefit.py), then hold them still:
  # an editor's auto rule is matched only when the stage's few weights are nearly exact, which
  # Adam on crops does not reach. A fresh run only (a resume or fine-tune keeps its weights).
  opt.auto_levels_prefit = False
  # Fit the local grid as one transform over the frame (least squares on a sample of each whole
  # pair's pixels, training/grid_prefit.py) before the first step: with model.local_grid_detail
  # an editor's local filter is mostly that one transform, which Adam from zero reaches slowly.
  # The grid then learns on from there. A fresh run only. Needs model.local_grid.
  opt.local_grid_prefit = False

  # What counts as a diverging run (guards.DivergenceMonitor): a logged loss above loss_factor
  # times its lowest so far for `patience` logs in a row, or an eval PSNR more than
  # eval_margin_db below the identity baseline. action: warn | stop (saves, then stops).
  config.divergence = div = ml_collections.ConfigDict()
  div.loss_factor = 10.0
  div.patience = 3
  div.eval_margin_db = 3.0
  div.action = 'warn'

  config.log_every_steps = 50
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  config.best_metric = 'psnr'  # eval metric that picks the kept best checkpoint
  config.num_image_summaries = 4
  # Score evals with LPIPS too (a VGG pass over every whole eval photo: minutes a photo on CPU).
  config.eval_lpips = True

  config.predict = predict = ml_collections.ConfigDict()
  predict.tile_size = 512
  predict.tile_overlap = 64
  predict.batch_tiles = 0  # tiles per device call; 0: from the device's free memory (CPU: 1)
  predict.lut_only = False  # the grade under the U-Net alone, no U-Net pass (inference/preview.py)
  # The graded file: by default the input's container, bit depth and ICC profile, with its EXIF.
  predict.output_format = 'same'  # same | jpeg | png | tiff
  predict.output_bits = 'same'  # same | 8 | 16 (jpeg is 8-bit only)
  predict.output_profile = 'same'  # same | srgb | display_p3 | adobe_rgb | prophoto_rgb
  predict.jpeg_quality = 95

  # Multi-host: leave None on a single machine or where jax auto-detects (TPU pods, SLURM).
  config.distributed = dist = ml_collections.ConfigDict()
  dist.coordinator_address = config_dict.placeholder(str)
  dist.num_processes = config_dict.placeholder(int)
  dist.process_id = config_dict.placeholder(int)
  return config


# Keys (or whole sections) that may change when a run resumes. Any other change would make the
# resumed run a different experiment from the one whose checkpoints are in the workdir.
RESUMABLE = frozenset(
  {
    # When things happen and what is written, not what is learned.
    'log_every_steps',
    'eval_every_steps',
    'checkpoint_every_steps',
    'keep_checkpoints',
    'num_image_summaries',
    'eval_lpips',
    'predict',
    'divergence',
    # Where things are: the training files themselves are compared by their fingerprint.
    'data.dir',
    'data.tfds_data_dir',
    'distributed',
    # How the same function is computed: the same variables and, within rounding, results.
    'model.batch_norm',
    'model.lut_method',
    'model.remat',
  }
)
# May grow on resume ("train longer"); the learning-rate schedule then follows the new value.
EXTENDABLE = frozenset({'num_train_steps'})
