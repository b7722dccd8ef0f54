"""Event selection expressions such as ``n_leptons >= 1 and n_jets >= 2 and met > 20``.

The expression is parsed with `ast` and walked over a whitelist (variable names, numbers, comparisons,
and/or/not, + - * /, abs/min/max); it is never passed to `eval`. Evaluation is vectorised over the
events of a chunk: each variable is a numpy array with one value per event.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping

import numpy as np

from crossfed.errors import CrossfedError, did_you_mean

# name -> meaning; the reader computes exactly these per event, before truncation to max_objects.
VARIABLES: dict[str, str] = {
    "n_electrons": "number of electrons",
    "n_muons": "number of muons",
    "n_leptons": "electrons + muons",
    "n_taus": "number of hadronic taus",
    "n_photons": "number of photons",
    "n_jets": "number of jets, b-tagged ones included",
    "n_bjets": "number of b-tagged jets",
    "met": "missing transverse momentum [GeV]",
    "ht": "scalar sum of jet pT [GeV]",
    "lead_lepton_pt": "pT of the hardest electron or muon, 0 if none [GeV]",
    "lead_jet_pt": "pT of the hardest jet, 0 if none [GeV]",
}

MAX_DEPTH = 100  # levels of nesting; real selections use a handful, Python's recursion limit is 1000
_FUNCTIONS: dict[str, Callable] = {"abs": np.abs, "min": np.minimum, "max": np.maximum}
_BINARY = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide}
_COMPARE = {ast.Lt: np.less, ast.LtE: np.less_equal, ast.Gt: np.greater, ast.GtE: np.greater_equal,
            ast.Eq: np.equal, ast.NotEq: np.not_equal}


class Selection:
    """A parsed, checked selection; call it with per-event variables to get a boolean mask."""

    def __init__(self, expression: str):
        self.expression = expression
        too_deep = f"nested too deeply (more than {MAX_DEPTH} levels)"
        try:
            self._tree = ast.parse(expression.strip(), mode="eval").body
        except SyntaxError as err:
            raise self._error(too_deep if "nested" in err.msg else f"not a valid expression ({err.msg})") from None
        except (RecursionError, MemoryError):  # Python's own parser gives up on very deep expressions
            raise self._error(too_deep) from None
        if _depth(self._tree) > MAX_DEPTH:  # the checks and the evaluation below recurse
            raise self._error(too_deep)
        self._check(self._tree)
        probe = self({name: np.zeros(1) for name in VARIABLES})  # catches e.g. 'met + 1' (not a condition)
        if probe.dtype != bool:
            raise self._error("must be a condition (a comparison, possibly joined with and/or/not)")

    def __call__(self, variables: Mapping[str, np.ndarray]) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(self._evaluate(self._tree, variables))

    def _error(self, what: str) -> CrossfedError:
        shown = self.expression if len(self.expression) <= 80 else self.expression[:77] + "..."
        return CrossfedError(f"selection {shown!r}: {what}; variables: {', '.join(VARIABLES)}")

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            if node.id not in VARIABLES:
                raise self._error(f"unknown variable {node.id!r}{did_you_mean(node.id, VARIABLES)}")
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise self._error(f"only numbers are allowed as constants, not {node.value!r}")
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS or node.keywords:
                raise self._error(f"only the functions {', '.join(_FUNCTIONS)} may be called")
            if len(node.args) != (1 if node.func.id == "abs" else 2):
                raise self._error(f"{node.func.id}() takes {1 if node.func.id == 'abs' else 2} argument(s)")
            for arg in node.args:
                self._check(arg)
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                self._check(value)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
            self._check(node.operand)
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            self._check(node.left)
            self._check(node.right)
        elif isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
            for operand in [node.left, *node.comparators]:
                self._check(operand)
        else:
            raise self._error(f"'{ast.unparse(node)}' is not allowed (use names, numbers, comparisons, "
                              "and/or/not, + - * /, abs/min/max)")

    def _evaluate(self, node: ast.AST, variables: Mapping[str, np.ndarray]):
        if isinstance(node, ast.Name):
            return variables[node.id]
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Call):
            return _FUNCTIONS[node.func.id](*(self._evaluate(a, variables) for a in node.args))
        if isinstance(node, ast.BoolOp):
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            values = [_as_condition(self._evaluate(v, variables)) for v in node.values]
            result = values[0]
            for value in values[1:]:
                result = combine(result, value)
            return result
        if isinstance(node, ast.UnaryOp):
            operand = self._evaluate(node.operand, variables)
            if isinstance(node.op, ast.Not):
                return np.logical_not(_as_condition(operand))
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](self._evaluate(node.left, variables), self._evaluate(node.right, variables))
        # Compare, possibly chained: a < b < c means a < b and b < c
        left = self._evaluate(node.left, variables)
        result = None
        for op, comparator in zip(node.ops, node.comparators):
            right = self._evaluate(comparator, variables)
            step = _COMPARE[type(op)](left, right)
            result = step if result is None else np.logical_and(result, step)
            left = right
        return result


def _depth(tree: ast.AST) -> int:
    """Depth of an expression tree, measured without recursion (it guards the recursive walks)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _as_condition(value):
    """and/or/not need conditions; a bare number (e.g. 'n_jets and met > 20') counts as value != 0."""
    value = np.asarray(value)
    return value if value.dtype == bool else value != 0


def parse_selection(expression: str | None) -> Selection | None:
    return None if expression is None or not expression.strip() else Selection(expression)
