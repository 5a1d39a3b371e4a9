"""The paper's numbers that a report sets beside ours (Takagi et al., IEEE Access 2019)."""

# Accuracy as (noise, blur, average), keyed by table, dataset and row.
_TABLE2 = {
    'caltech101': {'C': (0.642, 0.259, 0.450), 'recnet_single': (0.828, 0.684, 0.756),
                   'recnet_multiple': (0.819, 0.571, 0.694), 'qrnet': (0.832, 0.705, 0.768)},
    'caltech256': {'C': (0.346, 0.098, 0.222), 'recnet_single': (0.496, 0.328, 0.412),
                   'recnet_multiple': (0.473, 0.242, 0.357), 'qrnet': (0.521, 0.346, 0.434)},
}
ACCURACY = {
    'table2': _TABLE2,
    'table3': {'caltech101': {'qrnet': _TABLE2['caltech101']['qrnet'],
                              'small_qrnet': (0.828, 0.694, 0.761)}},
    'table4': {  # 'qrnet' (frozen classifier) is Table 2's QRNet row.
        'caltech101': {'C': (0.642, 0.259, 0.450), 'ft_single': (0.831, 0.741, 0.786),
                       'ft_multiple': (0.842, 0.745, 0.793), 'end_to_end': (0.861, 0.807, 0.834),
                       'qrnet': _TABLE2['caltech101']['qrnet']},
        'caltech256': {'C': (0.346, 0.098, 0.222), 'ft_single': (0.545, 0.402, 0.474),
                       'ft_multiple': (0.533, 0.414, 0.473), 'end_to_end': (0.582, 0.497, 0.539),
                       'qrnet': _TABLE2['caltech256']['qrnet']}},
}
# Table 5 (Caltech101, QRNet): PSNR and SSIM of the noise distorted, noise recovered, blur
# distorted and blur recovered images.
QUALITY = {'caltech101': {'psnr': (15.29, 23.30, 19.77, 20.85),
                          'ssim': (0.330, 0.823, 0.656, 0.700)}}
