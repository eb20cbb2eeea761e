import argparse

import pytest

from arb.argtypes import port, port_or_free, positive_float


def test_positive_float_accepts_a_positive_number_and_refuses_zero_negative_nan_and_text():
    assert positive_float("2.5") == 2.5
    for bad in ("0", "-1", "nan", "fast"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_float(bad)


def test_port_is_1_to_65535_and_port_or_free_also_takes_0():
    assert port("8050") == 8050 and port_or_free("0") == 0
    for bad in ("0", "65536", "http"):
        with pytest.raises(argparse.ArgumentTypeError):
            port(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        port_or_free("-1")


def test_finite_decimal_is_exact_and_refuses_infinity_nan_and_text():
    from decimal import Decimal

    from arb.argtypes import finite_decimal

    assert finite_decimal("12.5") == Decimal("12.5")
    for bad in ("inf", "NaN", "five"):
        with pytest.raises(argparse.ArgumentTypeError):
            finite_decimal(bad)
