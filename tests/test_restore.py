"""python -m qrnet_jax.restore: a tiny trained run's QRNet on generated files of many formats and
sizes; tiles against the whole image; the CSV against the run's own eval step; the export."""
import csv
import os
import shutil
import types

import jax
import numpy as np
import optax
import pytest
from PIL import Image

from configs import default
from qrnet_jax import checkpointing, parallel, run, steps
from qrnet_jax.data import images as images_lib
from qrnet_jax.data.synthetic import synthetic_images
from qrnet_jax.models import QRNet, init_variables
from qrnet_jax.models import classifiers as classifier_lib
from qrnet_jax.restore import __main__ as cli
from qrnet_jax.restore import export, predictions, tiles, trained
import qrnet_jax.restore as restore

SIZE = 16
CLASS_NAMES = ('diagonal', 'horizontal', 'other', 'vertical')


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  """A tiny finished run: small QRNet and small_vgg, one epoch each, on a class-per-folder tree of
  generated 16 px images (so the dataset has class names)."""
  root = tmp_path_factory.mktemp('restore_run')
  images, labels = synthetic_images(96, len(CLASS_NAMES), SIZE, 0)
  for i, (image, label) in enumerate(zip(images, labels)):
    os.makedirs(root / 'data' / CLASS_NAMES[label], exist_ok=True)
    Image.fromarray(image).save(root / 'data' / CLASS_NAMES[label] / f'{i:03d}.png')
  config = default.get_config()
  config.data.name, config.data.data_dir = 'folder', str(root / 'data')
  config.data.image_size = SIZE
  config.data.max_train_examples = config.data.max_eval_examples = 0
  config.model.small = True
  config.train.batch_size, config.train.pretrain_epochs, config.train.max_epochs = 8, 0, 1
  config.train.evaluate_test = False
  config.classifiers.small_vgg.train_epochs = 1
  run.train_and_evaluate(config, str(root / 'run'))
  return str(root / 'run')


@pytest.fixture(scope='module')
def loaded(run_dir):
  return trained.load_run(run_dir, classifier='small_vgg')


def _smooth(height, width, seed=0):
  """A smooth random colour image (uint8): JPEG-friendly, unlike white noise."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (max(2, height // 32), max(2, width // 32), 3), dtype=np.uint8)
  return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR))


def _write_inputs(folder):
  """{relative name: (width, height)} of generated inputs, plus two broken files."""
  folder.mkdir()
  (folder / 'sub').mkdir()
  rng = np.random.default_rng(1)
  Image.fromarray(_smooth(53, 37)).save(folder / 'odd.jpg', quality=90)
  Image.fromarray(_smooth(30, 20)[..., 0], 'L').save(folder / 'grey.png')
  rgba = np.concatenate([_smooth(24, 40), rng.integers(0, 256, (24, 40, 1), dtype=np.uint8)], -1)
  Image.fromarray(rgba, 'RGBA').save(folder / 'sub' / 'alpha.png')
  Image.fromarray(rng.integers(0, 65536, (21, 19), dtype=np.uint16)).save(folder / 'deep.png')
  Image.fromarray(_smooth(32, 48)).convert('P').save(folder / 'palette.gif')
  Image.fromarray(rng.integers(0, 256, (1, 1, 3), dtype=np.uint8)).save(folder / 'one.png')
  Image.fromarray(_smooth(17, 640)).save(folder / 'wide.png')
  Image.fromarray(_smooth(1500, 2000)).save(folder / 'sub' / 'large.jpg', quality=85)
  Image.fromarray(_smooth(16, 16)).save(os.path.join(os.fsencode(folder), b'caf\xe9.png'))
  (folder / 'notes.png').write_bytes(b'not an image')
  jpeg = (folder / 'odd.jpg').read_bytes()
  (folder / 'truncated.jpg').write_bytes(jpeg[:len(jpeg) // 2])
  assert Image.open(folder / 'sub' / 'large.jpg').size == (2000, 1500)
  assert Image.open(folder / 'deep.png').mode.startswith('I')
  return {'odd.jpg': (37, 53), 'grey.png': (20, 30), 'sub/alpha.png': (40, 24),
          'deep.png': (19, 21), 'palette.gif': (48, 32), 'one.png': (1, 1),
          'wide.png': (640, 17), 'sub/large.jpg': (2000, 1500),
          os.fsdecode(b'caf\xe9.png'): (16, 16)}


def test_every_format_and_size_is_restored_at_its_size_and_broken_files_are_reported(
    run_dir, tmp_path):
  sizes = _write_inputs(tmp_path / 'in')
  out = tmp_path / 'out'
  status = cli.main(['--workdir', run_dir, '--input', str(tmp_path / 'in'), '--output', str(out),
                     '--classifier', 'small_vgg', '--sheet'])
  assert status == 1  # two files could not be restored; every other one was
  for name, size in sizes.items():
    written = out / (os.path.splitext(name)[0] + '.png')
    with Image.open(written) as image:
      assert image.size == size, name
      assert image.mode == ('RGBA' if name == 'sub/alpha.png' else 'RGB'), name
  alpha = np.asarray(Image.open(out / 'sub' / 'alpha.png'))[..., 3]
  given = np.asarray(Image.open(tmp_path / 'in' / 'sub' / 'alpha.png'))[..., 3]
  np.testing.assert_array_equal(alpha, given)
  with open(out / 'predictions.csv', encoding='utf-8') as f:
    rows = {os.path.relpath(r['input'], tmp_path / 'in'): r for r in csv.DictReader(f)}
  sizes[restore.inputs_lib.printable(os.fsdecode(b'caf\xe9.png'))] = sizes.pop(
      os.fsdecode(b'caf\xe9.png'))  # a name that is not UTF-8: U+FFFD in the CSV
  assert set(rows) == set(sizes) | {'notes.png', 'truncated.jpg'}
  assert 'cannot identify image file' in rows['notes.png']['error']
  assert rows['truncated.jpg']['error'] and not rows['truncated.jpg']['output']
  for name in sizes:
    row = rows[name]
    assert not row['error'] and row['after_1_name'] in CLASS_NAMES
    probabilities = [float(row[f'after_{k}_probability']) for k in range(1, 5)]
    assert probabilities == sorted(probabilities, reverse=True)
    assert abs(sum(probabilities) - 1) < 1e-4  # 4 classes: the top 5 holds them all
  assert not (out / 'notes.png').exists() and not (out / 'truncated.png').exists()
  with Image.open(out / 'sheet.png') as sheet:
    assert sheet.width == 3 * (192 + 12) and sheet.height > 8 * 192


def test_tiled_restoration_equals_the_whole_image(loaded):
  image = _smooth(300, 470, seed=3).astype(np.float32) / 255.
  padded = tiles.pad_to_multiple(image)
  assert padded.shape == (304, 480, 3)
  apply = jax.jit(lambda x: loaded.qrnet.apply({'params': loaded.qrnet_params}, x))
  whole, = tiles.restore_padded([padded], apply, batch_size=1, tile=480)
  assert len(tiles.windows(304, 480, 288)) == 2 * 7
  tiled, = tiles.restore_padded([padded], apply, batch_size=4, tile=288)
  np.testing.assert_allclose(tiled, whole, atol=1e-5, rtol=0)  # everywhere, borders included


def test_tile_margin_covers_qrnets_receptive_field():
  """A change of one input pixel of the full QRNet reaches at most receptive_radius pixels."""
  qrnet = QRNet(small=False)
  params = init_variables(qrnet, 0, 16)['params']
  side, centre = 272, 136
  images = np.random.default_rng(0).random((2, side, side, 3), np.float32)
  images[1] = images[0]
  images[1, centre, centre] = 1.
  apply = jax.jit(lambda x: qrnet.apply({'params': params}, x))
  # One image a call: the same program on the same values gives the same bits, so every
  # difference is the pixel's reach (within one batch, positions may round differently).
  out = [np.asarray(apply(images[i:i + 1]))[0] for i in range(2)]
  rows, cols = np.nonzero(np.abs(out[1] - out[0]).max(-1) > 0)
  reach = max(np.abs(rows - centre).max(), np.abs(cols - centre).max())
  assert 100 < reach <= tiles.receptive_radius(small=False) <= tiles.TILE_MARGIN


def test_padding_reflects_like_numpy_for_every_side():
  for side in (1, 2, 3, 15, 16, 17, 37):
    image = np.random.default_rng(side).random((side, 5, 3))
    np.testing.assert_array_equal(
        tiles.pad_to_multiple(image)[:, :5],
        np.pad(image, ((0, tiles.padded_size(side) - side), (0, 0), (0, 0)), mode='reflect'))


def test_tiles_keep_every_pixel_once():
  for height, width, tile in ((2000, 1504, 1024), (304, 480, 288), (304, 480, 320), (32, 640, 1024),
                              (1040, 272, 272)):
    count = np.zeros((height, width), int)
    for w in tiles.windows(height, width, tile):
      y0, y1, x0, x1 = w.keep
      assert w.top % 16 == 0 and w.left % 16 == 0
      assert w.top <= y0 and y1 <= w.top + w.height and w.left <= x0 and x1 <= w.left + w.width
      assert y0 - w.top >= tiles.TILE_MARGIN or w.top == 0
      assert w.top + w.height - y1 >= tiles.TILE_MARGIN or w.top + w.height == height
      count[y0:y1, x0:x1] += 1
    assert (count == 1).all()


def _run_state_and_classifier(run_dir):
  """The run's best QRNet parameters and its classifier, as run.py builds and restores them."""
  config = trained.read_config(run_dir)
  prepared = run.prepare_classifiers(
      config, 'classifiers', types.SimpleNamespace(num_classes=len(CLASS_NAMES)), run_dir, {},
      None)
  specs = tuple(p.spec for p in prepared)
  frozen = {p.name: p.frozen for p in prepared}
  state = steps.create_train_state(init_variables(QRNet(small=True), 0, SIZE)['params'],
                                   {p.name: p.trainable for p in prepared}, optax.adam(1e-3), 0)
  abstract = checkpointing.abstract_like(jax.device_put(state, jax.devices()[0]))
  manager = checkpointing.Checkpoints(run_dir)
  try:
    best, _ = manager.restore_best(abstract)
  finally:
    manager.close()
  return best.params, frozen, specs


def test_csv_predictions_equal_the_runs_own_evaluation(run_dir, tmp_path):
  """The CSV's probabilities of a 16 px image, before and after restoration, are those of the run's
  jitted eval step: its cross-entropy for label k is -log p_k."""
  data_dir = os.path.join(os.path.dirname(run_dir), 'data', 'vertical')
  name = sorted(os.listdir(data_dir))[0]
  out = tmp_path / 'out'
  cli.main(['--workdir', run_dir, '--input', os.path.join(data_dir, name), '--output', str(out),
            '--classifier', 'small_vgg'])
  with open(out / 'predictions.csv') as f:
    row, = csv.DictReader(f)
  params, frozen, specs = _run_state_and_classifier(run_dir)
  mesh = parallel.make_mesh(jax.devices()[:1])
  image = np.asarray(Image.open(os.path.join(data_dir, name)).convert('RGB'))[None]
  for stage, qrnet in (('before', None), ('after', QRNet(small=True))):
    eval_step = steps.jit_eval_step(mesh, qrnet=qrnet, classifiers=specs, distortion=None)
    for k in range(1, len(CLASS_NAMES) + 1):
      label = int(row[f'{stage}_{k}_class'])
      assert row[f'{stage}_{k}_name'] == CLASS_NAMES[label]
      batch = {'image': image, 'label': np.asarray([label], np.int32),
               'mask': np.ones((1,), bool)}
      sums = eval_step(params, frozen, batch, jax.random.PRNGKey(0))
      np.testing.assert_allclose(float(row[f'{stage}_{k}_probability']),
                                 np.exp(-float(sums['small_vgg/ce'])), rtol=1e-5, atol=1e-6)


def test_csv_follows_the_runs_pipeline_for_a_classifier_of_a_fixed_input_size(
    run_dir, tmp_path, monkeypatch):
  """A classifier with an input size of its own (VGG16 224, InceptionV3 299; here small_vgg made
  to take 40 px) sees, in the run, the pipeline's image at data.image_size resized to its input.
  So it does in the CSV: a 48 px image goes to 16 px, then to 40, not straight to 40."""
  monkeypatch.setitem(classifier_lib.INPUT_SIZES, 'small_vgg', 40)
  path = str(tmp_path / 'noise.png')
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), np.uint8)).save(path)
  cli.main(['--workdir', run_dir, '--input', path, '--output', str(tmp_path / 'out'),
            '--classifier', 'small_vgg'])
  with open(tmp_path / 'out' / 'predictions.csv') as f:
    row, = csv.DictReader(f)
  params, frozen, specs = _run_state_and_classifier(run_dir)
  assert specs[0].input_size == 40
  eval_step = steps.jit_eval_step(parallel.make_mesh(jax.devices()[:1]), qrnet=None,
                                  classifiers=specs, distortion=None)
  pipeline_image = images_lib.decode_file(path, SIZE)[None]  # what the run's data pipeline reads
  for k in range(1, len(CLASS_NAMES) + 1):
    batch = {'image': pipeline_image, 'label': np.asarray([int(row[f'before_{k}_class'])]),
             'mask': np.ones((1,), bool)}
    sums = eval_step(params, frozen, batch, jax.random.PRNGKey(0))
    # 1e-5 measured (the pipeline rounds its 16 px image to uint8, restore keeps it in float);
    # straight to 40 px, the CSV's probabilities were 0.017 away.
    np.testing.assert_allclose(float(row[f'before_{k}_probability']),
                               np.exp(-float(sums['small_vgg/ce'])), rtol=0, atol=2e-4)


def test_distortion_is_seeded_per_file(run_dir, tmp_path):
  Image.fromarray(_smooth(40, 40)).save(tmp_path / 'a.png')
  outputs = {}
  for name, seed in (('first', '0'), ('again', '0'), ('other', '1')):
    restore_flags = ['--workdir', run_dir, '--input', str(tmp_path / 'a.png'), '--output',
                     str(tmp_path / name), '--distort', 'noise:60', '--seed', seed]
    assert cli.main(restore_flags) == 0
    outputs[name] = np.asarray(Image.open(tmp_path / name / 'a.png'))
  np.testing.assert_array_equal(outputs['first'], outputs['again'])
  assert np.abs(outputs['first'].astype(int) - outputs['other']).max() > 0
  noisy = restore.Distortion.parse('noise:60').apply(np.full((8, 8, 3), .5, np.float32),
                                                     restore.file_key(0, 'a.png'))
  assert 40 / 255 < np.std(noisy) < 80 / 255
  Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / 'dot.png')
  outcome = restore.restore_files(
      trained.load_run(run_dir), [str(tmp_path / 'a.png'), str(tmp_path / 'dot.png')],
      str(tmp_path / 'blurred'), restore.Settings(distortion=restore.Distortion('blur', 4.)),
      progress=False)
  assert [os.path.basename(o) for _, o in outcome.written] == ['a.png']
  (path, reason), = outcome.failed  # a blur wider than the image is reported, not applied
  assert path.endswith('dot.png') and 'sigma may be at most 1' in reason


def test_keep_format_and_outputs_never_overwrite_inputs(run_dir, tmp_path):
  folder = tmp_path / 'in'
  folder.mkdir()
  Image.fromarray(_smooth(20, 30)).save(folder / 'photo.jpg')
  Image.fromarray(_smooth(32, 32)).convert('P').save(folder / 'anim.gif')
  assert cli.main(['--workdir', run_dir, '--input', str(folder / '*.*'), '--output',
                   str(tmp_path / 'out'), '--keep_format']) == 0
  for name, fmt, size in (('photo.jpg', 'JPEG', (30, 20)), ('anim.gif', 'GIF', (32, 32))):
    with Image.open(tmp_path / 'out' / name) as image:
      assert (image.format, image.size) == (fmt, size)
  before = {p: p.read_bytes() for p in folder.iterdir()}
  with pytest.raises(SystemExit, match='error: --output: writing .* would overwrite the input'):
    cli.main(['--workdir', run_dir, '--input', str(folder), '--output', str(folder),
              '--keep_format'])
  assert {p: p.read_bytes() for p in folder.iterdir()} == before


@pytest.mark.parametrize('flags, message', [
    (['--classifier', 'resnet'], '--classifier=resnet: not a classifier of this run; its '
                                 'classifiers: small_vgg'),
    (['--distort', 'rain:3'], '--distort=rain:3: expected TYPE:LEVEL'),
    (['--tile', '200'], '--tile=200: must be a multiple of 16 above 256'),
    (['--batch_size', '0'], '--batch_size=0: must be at least 1'),
    (['--checkpoint', '/nonexistent'], '--checkpoint=/nonexistent: not a checkpoint step folder'),
])
def test_bad_flags_are_refused_naming_them(run_dir, tmp_path, flags, message):
  Image.fromarray(_smooth(16, 16)).save(tmp_path / 'a.png')
  with pytest.raises(SystemExit, match='error: ' + message):
    cli.main(['--workdir', run_dir, '--input', str(tmp_path / 'a.png'), '--output',
              str(tmp_path / 'out')] + flags)


def test_checkpoint_flag_reads_latest_or_a_step_folder(run_dir, loaded):
  latest = os.path.join(run_dir, 'checkpoints', 'latest')
  step = os.path.join(latest, max(os.listdir(latest), key=lambda n: int(n) if n.isdigit() else -1))
  for checkpoint in ('latest', step):
    params = trained.load_run(run_dir, checkpoint=checkpoint).qrnet_params
    # One epoch: the latest step is the best.
    jax.tree.map(np.testing.assert_array_equal, params, loaded.qrnet_params)


def test_checkpoint_of_another_optimizer_is_read_for_its_parameters(run_dir, loaded, tmp_path):
  """restore reads the parameters alone: a run whose train state holds another optimizer's state
  (SGD with momentum, not the Adam the runs use) gives back the parameters it saved."""
  copy = tmp_path / 'run'
  shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns('checkpoints'))
  params = jax.tree.map(lambda x: x + 1., loaded.qrnet_params)
  state = steps.create_train_state(params, {'small_vgg': {}}, optax.sgd(0.1, momentum=0.9), 0)
  manager = checkpointing.Checkpoints(str(copy))
  try:
    manager.save(1, state, {'best_val_loss': 1.}, val_loss=1.)
  finally:
    manager.close()
  jax.tree.map(np.testing.assert_array_equal, trained.load_run(str(copy)).qrnet_params, params)


def test_not_a_run_is_refused(tmp_path):
  with pytest.raises(SystemExit, match='no readable config.json'):
    cli.main(['--workdir', str(tmp_path), '--input', str(tmp_path), '--output',
              str(tmp_path / 'out')])


def test_classifier_input_resizes_as_the_data_pipeline():
  from qrnet_jax.data import images as images_lib
  image = _smooth(53, 37)
  for policy in ('squash', 'center_crop'):
    ours = predictions.classifier_input(image / 255., SIZE, policy)
    pipeline = images_lib.resize(Image.fromarray(image), SIZE, policy) / 255.
    assert np.abs(ours - pipeline).max() < 3 / 255, policy
  same = np.random.default_rng(0).random((SIZE, SIZE, 3)).astype(np.float32)
  assert predictions.classifier_input(same, SIZE) is same


def test_exported_model_equals_the_flax_model(run_dir, loaded, tmp_path):
  path = tmp_path / 'qrnet.stablehlo'
  assert cli.main(['export', '--workdir', run_dir, '--out', str(path), '--classifier',
                   'small_vgg']) == 0
  exported = export.load_exported(str(path))
  c = loaded.classifier
  rng = np.random.default_rng(0)
  apply = jax.jit(lambda x: loaded.qrnet.apply({'params': loaded.qrnet_params}, x))
  for shape in ((2, 32, 48, 3), (3, 64, 16, 3), (1, 37, 5, 3)):
    images = rng.random(shape, np.float32)
    restored, logits = exported.call(images)
    assert restored.shape == shape
    expected = apply(tiles.pad_to_multiple(images))[:, :shape[1], :shape[2]]
    np.testing.assert_allclose(restored, expected, atol=1e-5, rtol=0)
    resized = predictions.classifier_input(np.asarray(expected), c.image_size)
    expected_logits, _ = steps.classifier_logits(c.spec, c.frozen, c.trainable, resized)
    np.testing.assert_allclose(logits, expected_logits, atol=1e-4, rtol=1e-4)
