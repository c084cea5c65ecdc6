# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Fill a bank with `earthsynth synthesize` under DDP (2 CPU processes); launched by a test.

Environment: SYNTH_BANK (bank root), SYNTH_LIMITS (comma-separated limits) and the conditions:
SYNTH_DATA (a datamodule as JSON: class_path and init_args, e.g. a BoxLayoutDataModule) or
SYNTH_CORPUS (a corpus root: the masks of its val split). Runs one synthesis per limit (the
first `limit` keys) in the same processes, so later runs resume what earlier ones wrote.
Settings travel in the environment, not argv, because Lightning's DDP launcher re-runs this
script for rank 1.
"""

import json
import os

os.environ.setdefault('OMP_NUM_THREADS', '1')

from torchgeo_earthsynth.cli import synthesize as main

data = os.environ.get('SYNTH_DATA')
source = ['--data', data] if data else [
    '--data.root', os.environ['SYNTH_CORPUS'], '--data.split', 'val',
]
for limit in os.environ['SYNTH_LIMITS'].split(','):
    summary = main([
        '--model', 'torchgeo_earthsynth.lightning_modules.EarthSynthControlNet',
        '--model.preset', 'tiny', '--model.image_size', '32',
        '--model.predict_inference_steps', '2',
        *source, '--data.batch_size', '2', '--data.limit', limit,
        '--bank.root', os.environ['SYNTH_BANK'],
        '--trainer.accelerator', 'cpu', '--trainer.devices', '2', '--trainer.strategy', 'ddp',
        '--trainer.enable_progress_bar', 'false', '--allow-untrained',
    ])
    if summary is not None:  # global rank 0
        print('SUMMARY ' + json.dumps(summary), flush=True)
