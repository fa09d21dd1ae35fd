"""``python run.py ...`` in a checkout: the same as the installed ``equiv-run`` (see equiv/cli.py).

    python run.py                                  # task=digits_rot90 method=lambda_equitune
    python run.py task=digits_rot90 method=equizero seed=1
    python run.py -m method=vanilla,equitune,lambda_equitune,equizero seed=0,1,2
"""

from equiv.cli import main

if __name__ == "__main__":
    main()
