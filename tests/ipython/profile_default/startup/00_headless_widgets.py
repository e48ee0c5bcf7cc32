# Loaded only under the test suite (tests/conftest.py points IPYTHONDIR here).
# Replaces ipywidgets.interact with a single call at the widgets' default values, so an
# interactive cell still draws its figure once and nothing waits for a browser front end.
try:
    import ipywidgets as _widgets

    def _default(value):
        if isinstance(value, _widgets.ValueWidget):
            return value.value
        if isinstance(value, tuple) and len(value) in (2, 3) and all(isinstance(v, (int, float)) for v in value):
            lo, hi = value[0], value[1]
            mid = (lo + hi) / 2
            return type(lo)(round(mid)) if isinstance(lo, int) and isinstance(hi, int) else mid
        if isinstance(value, (list, tuple)) and value:
            first = value[0]
            return first[1] if isinstance(first, tuple) and len(first) == 2 else first
        if isinstance(value, dict) and value:
            return next(iter(value.values()))
        return value

    def _interact_once(__fn=None, **kwargs):
        def run(fn):
            import inspect

            params = inspect.signature(fn).parameters
            args = {k: _default(v) for k, v in kwargs.items()}
            for name, p in params.items():
                if name not in args and p.default is not inspect.Parameter.empty:
                    args[name] = p.default
            fn(**args)
            return fn

        return run(__fn) if __fn is not None else run

    _widgets.interact = _interact_once
    _widgets.interact_manual = _interact_once
except ImportError:  # ipywidgets missing: the notebook's own import will say so
    pass
