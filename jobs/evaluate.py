"""`./spark-submit.sh evaluate`: the MIND evaluation (dcn/evaluate.py) through the launcher."""
import sys

from dcn.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
