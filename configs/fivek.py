"""MIT-Adobe FiveK, expert C, 480p sRGB, on the 4500 / 500 split that 3D-LUT and AdaInt report.

The data is a paired folder (docs/fivek.md lays it out from the usual 480p release):

  DIR/input/a0001.jpg ... a5000.jpg    the photos as shot
  DIR/target/a0001.jpg ... a5000.jpg   expert C's retouch
  DIR/splits/train.txt, test.txt       copies of configs/fivek_splits/ (a0001-a4500, a4501-a5000)

  python -m unet_jax.main --config=configs/fivek.py --config.data.dir=DIR --workdir=runs/fivek

Eval is on all 500 test photos at their full 480p size, the size the published PSNRs use.
"""

import pathlib

from unet_jax.config import get_base_config

SPLITS_DIR = pathlib.Path(__file__).resolve().parent / 'fivek_splits'


def get_config():
  config = get_base_config()
  config.data.name = 'paired_folders'
  config.data.train_split = 'train'
  config.data.eval_split = 'test'
  config.data.eval_size = None
  # Half the samples squeeze the whole photo into the crop, so training sees the frame that
  # exposure and white balance were judged on; the other half are crops at the photo's scale.
  config.data.sampling = 'mixed'
  config.data.crop_size = 256
  config.data.num_workers = 4  # decoding 480p JPEGs on one core would starve an accelerator

  # The 256 px size of the seed's table. Retouching is mostly global, and neither a crop nor a
  # tile sees the whole photo: global context pools the bottleneck over the image (at predict
  # time over all tiles), and the residual output starts the model at "leave the photo as is".
  config.model.levels = 4
  config.model.base_channels = 32
  config.model.global_context = 'pooled'
  config.model.residual = True

  config.batch_size = 16
  config.num_train_steps = 50_000  # about 180 passes over the 4500 training photos
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 1_000
  return config
