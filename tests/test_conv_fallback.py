"""Without the oneDNN extension (not built, build failed, another platform) the models run on XLA's
convolutions under conv_impl='auto', saying so once, and 'onednn' is refused with a clear error."""
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import jax, jax.numpy as jnp
    from qrnet_jax.ops import conv, onednn
    onednn.LIBRARY = '/nonexistent/_onednn_conv.so'  # as on a machine where it was never built
    from qrnet_jax.models import QRNet
    model = QRNet(small=True)
    x = jnp.zeros((1, 16, 16, 3))
    params = model.init(jax.random.PRNGKey(0), x)
    for _ in range(2):  # traced twice: the warning is said once
      hlo = jax.jit(lambda p, x: model.apply(p, x)).lower(params, x).as_text()
    assert 'QrnetOnednnConv' not in hlo and 'convolution' in hlo, hlo[:2000]
    assert not onednn.available()
    conv.set_conv_impl('onednn')
    try:
      model.apply(params, x)
    except RuntimeError as e:
      print('REFUSED:', e)
''')


def test_models_run_on_xla_without_the_extension_and_say_so_once():
  result = subprocess.run([sys.executable, '-c', SCRIPT], capture_output=True, text=True,
                          timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  warning = 'Convolutions run on XLA: /nonexistent/_onednn_conv.so is not built'
  assert result.stderr.count(warning) == 1
  assert 'REFUSED: config.model.conv_impl=onednn' in result.stdout
