"""The paper's findings, each judged on this suite's test images: a paired difference between two
methods, its 95 % interval, and a verdict.

Each claim says that method A's accuracy minus method B's is above -margin (margin 0: A beats B;
margin 0.01: A costs at most one point). The difference is taken image by image on the same test
images (every method sees the same distorted images), its interval is the percentile bootstrap over
those images (qrnet_jax.stats; 10,000 resamples), and the verdict reads the interval:
  holds         the whole interval is above -margin: the paper's direction, resolved;
  reversed      the whole interval is below -margin: the opposite, resolved;
  not resolved  the interval holds values on both sides: this scale cannot tell.
Intervals are per claim, without a correction for the number of claims.
Where the experiment names the paper's dataset, the paper's own difference sits beside ours: the
verdict is about the direction of the paper's claim, not its digits.
"""
from typing import NamedTuple, Optional

from qrnet_jax import stats
from qrnet_jax.report import intervals
from qrnet_jax.report import paper as paper_numbers
from qrnet_jax.report.methods import (TOP_LEVELS, Method, end_to_end_methods, has_runs,
                                      recovery_methods, small_qrnet_methods, unseen_methods)

CLEAN_MARGIN = 0.01  # "QRNet costs C nothing on clean images": within one point
CLOSE_MARGIN = 0.01  # "small QRNet is close to QRNet": at most one point below it
_PAPER_COLUMN = {'noise': 0, 'blur': 1, 'average': 2}


class Claim(NamedTuple):
  claim: str  # what the paper says, in words
  source: str  # where the paper says it
  paper_table: Optional[str]  # report.paper.ACCURACY's table holding both rows, if any
  a: Method
  b: Method
  column: str  # clean, noise, blur or average
  top: Optional[int] = None  # only each distortion's strongest levels
  margin: float = 0.


def _where(column, top):
  return f'{column}, {top} strongest levels' if top else column


def claims(c: str, u: Optional[str]) -> list:
  """Every claim of the paper for classifier C and unseen classifier U, in the paper's order."""
  r = {m.key: m for m in recovery_methods(c)}
  e = {m.key: m for m in end_to_end_methods(c)}
  small = {m.key: m for m in small_qrnet_methods(c)}
  found = []
  for d in ('noise', 'blur'):
    for top in (None, TOP_LEVELS):
      found.append(Claim(f'QRNet + {c} beats {c} alone ({_where(d, top)})', 'Table 2',
                         'table2', r['qrnet'], r['C'], d, top))
  found.append(Claim(f'QRNet costs {c} at most 1 point on clean images', 'Section IV-B',
                     None, r['qrnet'], r['C'], 'clean', margin=CLEAN_MARGIN))
  for key, name in (('recnet_single', 'RecNet (single)'), ('recnet_multiple', 'RecNet (multiple)')):
    for d in ('noise', 'blur'):
      found.append(Claim(f'QRNet beats {name} ({d})', 'Table 2', 'table2', r['qrnet'], r[key], d))
  found.append(Claim('small QRNet is within 1 point of QRNet (average)', 'Table 3', 'table3',
                     small['small_qrnet'], small['qrnet'], 'average', margin=CLOSE_MARGIN))
  for a, b in (('ft_single', 'qrnet'), ('ft_multiple', 'qrnet'), ('end_to_end', 'ft_single'),
               ('end_to_end', 'ft_multiple')):
    found.append(Claim(f'{e[a].label} beats {e[b].label} (average)', 'Table 4', 'table4',
                       e[a], e[b], 'average'))
  if u:
    m = {x.key: x for x in unseen_methods(u)}
    for a, b in (('qrnet', 'U'), ('mqrnet', 'U'), ('mqrnet', 'qrnet')):
      for d in ('noise', 'blur'):
        found.append(Claim(f'{m[a].label} beats {m[b].label} ({d})', 'Figure 6', None, m[a],
                           m[b], d))
  return found


def _paper_difference(claim: Claim, paper: Optional[str]):
  table = paper_numbers.ACCURACY.get(claim.paper_table, {}).get(paper) if paper else None
  if not table or claim.a.key not in table or claim.b.key not in table:
    return None
  i = _PAPER_COLUMN.get(claim.column if claim.top is None else None)
  return None if i is None else round(table[claim.a.key][i] - table[claim.b.key][i], 3)


def judged(sources_a: list, sources_b: list, outcomes: dict, margin: float = 0.):
  """{'difference', 'low', 'high', 'images', 'verdict'}: A's cell minus B's image by image
  (intervals.paired_difference) and the verdict on "A - B is above -margin"; None without
  outcomes. Every finding of the report is judged here: the paper's claims, on one seed or each
  (seeds.py), and the corruption suite's (corruptions.py)."""
  compared = intervals.paired_difference(sources_a, sources_b, outcomes)
  if compared is None:
    return None
  return {**compared, 'verdict': stats.verdict(compared['low'], compared['high'], margin)}


def judge_claim(claim: Claim, tests: dict, outcomes: dict):
  """`judged` on the claim's two cells."""
  return judged(intervals.cell_sources(claim.a, claim.column, tests, claim.top),
                intervals.cell_sources(claim.b, claim.column, tests, claim.top), outcomes,
                claim.margin)


def experiment_findings(exp: dict, tests: dict, outcomes: dict) -> list:
  """One record per claim whose runs the experiment has (with per-image outcomes)."""
  records = []
  for claim in claims(exp['classifier'], exp.get('unseen')):
    if not (has_runs(tests, claim.a) and has_runs(tests, claim.b)):
      continue
    found = judge_claim(claim, tests, outcomes)
    if found is None:
      continue
    records.append({
        'claim': claim.claim, 'source': claim.source, 'a': claim.a.label, 'b': claim.b.label,
        'column': claim.column, 'top_levels': claim.top, 'margin': claim.margin, **found,
        'paper_difference': _paper_difference(claim, exp.get('paper'))})
  return records
