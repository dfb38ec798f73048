"""``python -m mlops_feature_store <command> [<json-args>]``: see :mod:`.runner`."""

from mlops_feature_store.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
