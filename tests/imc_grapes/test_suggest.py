"""'did you mean ...?' for a mistyped name: the shared helper, and what each place that rejects a name appends."""
import argparse

import pytest

from imc_grapes.suggest import (SuggestingArgumentParser, close_match, did_you_mean, did_you_mean_each,
                                typed_options, unrecognized_message)


@pytest.mark.parametrize("value, valid, expected", [
    ("mnsit", ["mnist", "fashion-mnist", "synthetic"], "mnist"),        # two letters swapped
    ("adm", ["adagrad", "adam", "adamw", "sgd"], "adam"),               # a letter left out
    ("reramsb", ["ReRamES", "ReRamSB", "PCM"], "ReRamSB"),             # case is ignored, the valid spelling returned
    ("grapse", ["sgd", "grapes", "grapes-local", "layer-mean"], "grapes"),
    ("cifar", ["mnist", "fashion-mnist", "synthetic"], None),           # nothing close: no guess
    ("fb", ["bp", "fa", "dfa"], None),                                  # 'fa' and 'bp' are half right: no guess
    ("mnist", ["mnist", "synthetic"], None),                            # a valid name needs no correction
    (3, ["3", "4"], None),                                              # not a string: no spelling to correct
    (None, ["none"], None),
])
def test_close_match(value, valid, expected):
    assert close_match(value, valid) == expected


def test_an_abbreviation_finds_the_one_name_it_begins_when_asked():
    """difflib finds nothing for a short abbreviation (--bat is 0.59 similar to --batch-size, below the 0.6
    cutoff) or a wrong name; with abbreviations=True the one name the value begins wins, and a value that begins
    several names (--ba) is left to difflib (as without abbreviations)."""
    valid = ["--batch-size", "--backend", "--base-optimizer", "--lr"]
    assert close_match("--bat", valid) is None
    assert close_match("--bat", valid, abbreviations=True) == "--batch-size"
    assert close_match("--BASE", valid, abbreviations=True) == "--base-optimizer"     # case ignored, as before
    assert close_match("--ba", valid, abbreviations=True) == close_match("--ba", valid)     # begins three: difflib
    assert close_match("--lrr", valid, abbreviations=True) == "--lr"                # a typo: difflib as before
    assert (did_you_mean_each(["--bat", "--lrr"], valid, abbreviations=True)
            == "; did you mean '--batch-size' for '--bat', '--lr' for '--lrr'?")


@pytest.mark.parametrize("value, valid, expected", [
    ("lrate", ["epochs", "lr", "rule", "seed"], "lr"),                  # 0.57 similar to 'lr': difflib finds none
    ("Learning-Rate", ["epochs", "lr", "seed"], "lr"),                   # case ignored, '-' read as '_'
    ("--learning-rate", ["--epochs", "--lr", "--seed", "--seeds"], "--lr"),    # an option: the option's spelling
    ("--bs", ["--batch-size", "--lr", "--seed"], "--batch-size"),        # difflib alone: '--seed'
    ("num_epochs", ["epoch_scale", "epochs"], "epochs"),
    ("random_seed", ["--seed", "--seeds"], "--seed"),                    # the field itself before its plural
    ("random_seed", ["lr_grid", "seeds", "tune_seeds"], "seeds"),        # only the plural valid (a compare spec)
    ("lrate", ["dw_min", "w_max"], None),                                # the field is not valid here: no guess
    ("seeds", ["seed", "seeds"], None),                                  # a valid name needs no correction
])
def test_another_name_of_a_short_training_field_finds_the_field(value, valid, expected):
    """:data:`devices.suggest.SYNONYMS`: the common other names of lr, epochs, batch_size and seed (lrate,
    learning_rate, n_epochs, bs, random_seed, ...) name the field where it is valid, as a key or an option."""
    assert close_match(value, valid) == expected
    assert close_match(value, valid, abbreviations=True) == expected


def test_the_difflib_guess_the_synonyms_replace():
    """What the table is for: without it, 'lrate' finds nothing and '--bs' finds '--seed' (a wrong guess)."""
    import difflib

    from devices.suggest import CUTOFF

    assert difflib.get_close_matches("lrate", ["epochs", "lr", "rule", "seed"], n=1, cutoff=CUTOFF) == []
    assert difflib.get_close_matches("--bs", ["--batch-size", "--lr", "--seed"], n=1, cutoff=CUTOFF) == ["--seed"]


def test_did_you_mean_texts():
    assert did_you_mean("mnsit", ("mnist", "synthetic")) == "; did you mean 'mnist'?"
    assert did_you_mean("cifar", ("mnist", "synthetic")) == ""
    assert did_you_mean_each(["dwmin"], ["dw_min", "w_max"]) == "; did you mean 'dw_min'?"
    assert (did_you_mean_each(["dwmin", "wmax", "zzz"], ["dw_min", "w_max"])
            == "; did you mean 'dw_min' for 'dwmin', 'w_max' for 'wmax'?")
    assert did_you_mean_each(["zzz"], ["dw_min"]) == ""


def test_the_parser_records_the_options_typed_not_those_left_at_their_defaults(capsys):
    """typed_options: what was typed, in the spelling typed (the last one for an option given twice), including a
    value equal to the default; defaults (and so the help's %(default)s) stay as given; the subcommand's options
    reach the namespace of the top-level parser."""
    parser = SuggestingArgumentParser(prog="p")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("train")
    p.add_argument("--noise", type=float, default=0.06, help="noise (default %(default)s)")
    p.add_argument("--seed", "--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--exact", action="store_true")
    p.add_argument("--drop-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--param", action="append", default=None)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="size", action="store_const", const="quick")
    p.set_defaults(size="full")
    args = parser.parse_args(["train"])
    assert typed_options(args) == {}
    assert (args.noise, args.seed, args.exact, args.drop_last, args.param, args.size) == (0.06, [0], False, True,
                                                                                        None, "full")
    args = parser.parse_args(["train", "--noise", "0.06", "--seeds", "0", "--drop-last", "--no-drop-last", "--exact",
                              "--param", "a", "--param", "b", "--quick"])
    assert typed_options(args) == {"noise": "--noise", "seed": "--seeds", "drop_last": "--no-drop-last",
                                   "exact": "--exact", "param": "--param", "size": "--quick"}
    assert list(typed_options(args)) == ["noise", "seed", "drop_last", "exact", "param", "size"]
    assert (args.noise, args.seed, args.exact, args.drop_last, args.param, args.size) == (0.06, [0], True, False,
                                                                                        ["a", "b"], "quick")
    assert typed_options(argparse.Namespace(noise=0.1)) == {}
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    assert "noise (default 0.06)" in capsys.readouterr().out


def test_argparse_choices_get_the_suggestion(capsys):
    parser = SuggestingArgumentParser(prog="p")
    parser.add_argument("--score", choices=("final", "best"))
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("train")
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--score", "fnal"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.endswith("p: error: argument --score: invalid choice: 'fnal' (choose from "
                                            "'final', 'best'); did you mean 'final'?\n")
    with pytest.raises(SystemExit):
        parser.parse_args(["trian"])
    assert capsys.readouterr().err.endswith("; did you mean 'train'?\n")
    with pytest.raises(SystemExit):                         # nothing close: argparse's own message, unchanged
        parser.parse_args(["--score", "zzz"])
    assert capsys.readouterr().err.endswith("invalid choice: 'zzz' (choose from 'final', 'best')\n")
    assert parser.parse_args(["--score", "best"]).score == "best"
    assert isinstance(parser, argparse.ArgumentParser)


@pytest.mark.parametrize("args, message", [
    (["train", "--dataset", "mnsit"], "imc-grapes train: error: --dataset: TrainConfig.dataset must be one of mnist, "
                                      "fashion-mnist, synthetic, got 'mnsit'; did you mean 'mnist'?"),
    (["train", "--optimizer", "grapse"], "imc-grapes train: error: --optimizer: TrainConfig.optimizer must be one of "
                                         "sgd, grapes, grapes-local, layer-mean, got 'grapse'; did you mean 'grapes'?"),
    (["train", "--backend", "crossbar", "--preset", "reramsb"], "got 'reramsb'; did you mean 'ReRamSB'?"),
    (["train", "--backend", "crossbar", "--importance", "arry"],
     "AnalogSettings.importance must be one of exact, array, got 'arry'; did you mean 'array'?"),
    (["train", "--base-optimizer", "adm"], "got 'adm'; did you mean 'adam'?"),
    (["train", "--base-optimizer", "lbfgs"], "(LBFGS needs a closure that re-evaluates the loss (step(closure)))"),
    (["train", "--rule", "dfaa"], "TrainConfig.rule must be one of bp, fa, dfa, got 'dfaa'; did you mean 'dfa'?"),
    (["trian"], "imc-grapes: error: argument COMMAND: invalid choice: 'trian' (choose from 'compare', "
                "'compare-summary', 'train', 'data', 'sweep', 'experiment', 'doctor'); did you mean 'train'?"),
    (["experiment", "mlpp"], "invalid choice: 'mlpp' (choose from 'mlp', 'fa-dfa', 'cnn', 'rnn', 'snn', "
                             "'forgetting', 'list'); did you mean 'mlp'?"),
    (["compare", "--tune-score", "fnal"], "(choose from 'final', 'best'); did you mean 'final'?"),
    (["data", "fetch", "mnsit"], "imc-grapes data fetch: error: unknown dataset 'mnsit'; valid: mnist, "
                                 "fashion-mnist, synthetic; did you mean 'mnist'?"),
    (["data", "fetch", "mnist", "--source", "npn"], "imc-grapes data fetch: error: unknown --source 'npn'; valid: "
                                                    "auto, npm, debian, mirror; did you mean 'npm'?"),
    (["compare-summary", "x", "--method", "grapse"], "got ['grapse']; did you mean 'grapes'?"),
    (["sweep", "x.toml", "--executor", "lcoal"], "(choose from 'local', 'ray'); did you mean 'local'?"),
])
def test_cli_suggests_the_name_meant(tmp_path, capsys, args, message):
    from imc_grapes.cli import main

    try:
        code = main([*args, *(["--out", str(tmp_path / "out")] if args[0] == "train" else [])])
    except SystemExit as exc:                               # argparse's usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("did you mean") == (0 if "lbfgs" in args else 1)
    assert not (tmp_path / "out").exists()


def test_unknown_fields_get_suggestions():
    from imc_grapes import TrainConfig
    from imc_grapes.backends import AnalogSettings
    from imc_grapes.config import ConfigError
    from imc_grapes.sweep.paths import SpecError, resolve_path

    with pytest.raises(ConfigError, match=r"; did you mean 'batch_size'\?$"):
        TrainConfig.from_dict({"batchsize": 32})
    with pytest.raises(ValueError, match=r"; did you mean 'adc_bits'\?$"):
        AnalogSettings.from_dict({"adc_bit": 6})
    with pytest.raises(ValueError, match=r"; did you mean 'dw_min'\?$"):
        AnalogSettings(preset="ReRamSB", device_overrides={"dwmin": 0.01})
    with pytest.raises(SpecError, match=r"; did you mean 'adc_bits'\?$"):
        resolve_path("periphery.adcbits")
    with pytest.raises(SpecError, match=r"; did you mean 'epochs'\?$"):
        resolve_path("epoch")


def _message(make) -> str:
    with pytest.raises(ValueError) as err:
        make()
    return str(err.value)


def test_model_and_layer_names_get_suggestions():
    """The remaining name checks (models, GRAPES, layers, experiments, energy table) append the guess when one valid
    name is close, and only then."""
    import types

    import torch
    from torch import nn

    from imc_grapes.backends.costs import load_energy_table
    from imc_grapes.backends.importance import ImportanceSource
    from imc_grapes.backends.layers import AnalogLayer
    from imc_grapes.backends.network import build_network
    from imc_grapes.compare import CompareSpec
    from imc_grapes.config import TrainConfig
    from imc_grapes.experiments.groups import Group
    from imc_grapes.grapes import attach_grapes
    from imc_grapes.models import MLP, build_model
    from imc_grapes.recurrent import RecurrentLayer, SequenceClassifier
    from imc_grapes.snu import SpikingClassifier

    mlp = MLP([4, 3, 2], seed=0)
    cases = [
        (lambda: SpikingClassifier(4, (2,), 2, encoding="rte"),
         "SpikingClassifier.encoding must be one of ('rate', 'latency'), got 'rte'; did you mean 'rate'?"),
        (lambda: attach_grapes(mlp, mode="propagted"),
         "attach_grapes.mode must be one of ('propagated', 'local', 'layer-mean', 'layer-mean-local'), "
         "got 'propagted'; did you mean 'propagated'?"),
        (lambda: attach_grapes(mlp, rule="dfaa"),
         "attach_grapes.rule must be one of ('bp', 'fa', 'dfa'), got 'dfaa'; did you mean 'dfa'?"),
        (lambda: RecurrentLayer("lstn", 2, 2, torch.Generator().manual_seed(0)),
         "RecurrentLayer.cell must be one of ('rnn', 'lstm'), got 'lstn'; did you mean 'lstm'?"),
        (lambda: SequenceClassifier("rnm", 2, (2,), 2, seed=0),
         "SequenceClassifier.cell must be one of ('rnn', 'lstm'), got 'rnm'; did you mean 'rnn'?"),
        (lambda: Group("g", {}, CompareSpec(base=TrainConfig(dataset="synthetic"), hardware=("digital",)),
                       "permutd"),
         "Group.trainer must be one of standard, custom, permuted, got 'permutd'; did you mean 'permuted'?"),
        (lambda: AnalogLayer(nn.Identity(), "linear", 2, 2, (2, 2), backward_mode="feedbak"),
         "AnalogLayer.backward_mode must be one of ('array', 'feedback', 'zeros'), got 'feedbak'; did you mean "
         "'feedback'?"),
        (lambda: build_network(types.SimpleNamespace(backend="digitl"), (4,), 2, "cpu"),   # type: ignore[arg-type]
         "build_network: backend must be one of digital, crossbar, aihwkit, got 'digitl'; did you mean 'digital'?"),
        (lambda: ImportanceSource("arry"),
         "ImportanceSource.source must be one of ('exact', 'array'), got 'arry'; did you mean 'array'?"),
        (lambda: MLP([4, 2], activation="rellu"),
         "MLP.activation must be one of ('relu', 'tanh'), got 'rellu'; did you mean 'relu'?"),
        (lambda: MLP([4, 2], rule="ffa"), "MLP.rule must be one of ('bp', 'fa', 'dfa'), got 'ffa'; did you mean 'fa'?"),
        (lambda: build_model("mpl", input_shape=(4,), n_classes=2),
         "build_model: unknown model 'mpl'; valid names: cnn, mlp; did you mean 'mlp'?"),
        (lambda: load_energy_table({"pulse_pJ": 1.0}),
         "energy table: unknown entry 'pulse_pJ'; valid: adc_pj_per_level, dac_pj_per_level, array_mac_pj, "
         "pulse_pj, digital_op_pj, digital_mac_pj; did you mean 'pulse_pj'?"),
    ]
    for make, message in cases:
        assert _message(make) == message
    # nothing close: the list alone
    assert _message(lambda: MLP([4, 2], rule="hebb")) == "MLP.rule must be one of ('bp', 'fa', 'dfa'), got 'hebb'"
    assert _message(lambda: ImportanceSource("oracle")) == ("ImportanceSource.source must be one of ('exact', "
                                                            "'array'), got 'oracle'")


def test_write_weights_suggests_the_close_layer_names():
    from imc_grapes.backends.network import build_network
    from imc_grapes.config import TrainConfig

    net = build_network(TrainConfig(dataset="synthetic", hidden=(3,)), (4,), 2, "cpu")
    names = sorted(net.read_weights())
    typo = names[0].upper() + "x"
    with pytest.raises(ValueError) as err:
        net.write_weights({typo: None, "zzz": None})   # type: ignore[dict-item]
    assert str(err.value) == (f"write_weights: unknown layer(s) {sorted([typo, 'zzz'])}; valid: {names}; did you "
                              f"mean {names[0]!r} for {typo!r}?")


def test_unrecognized_words_suggest_only_shown_options_and_take_a_negative_number_for_a_value(capsys):
    parser = SuggestingArgumentParser(prog="p")
    sub = parser.add_subparsers(dest="command").add_parser("run")
    sub.add_argument("--lr", type=float)
    sub.add_argument("--secret-rate", help=argparse.SUPPRESS)
    assert (unrecognized_message(sub, ["-0.5", "--lrr", "--secret-rat", "x"])
            == "unrecognized arguments: -0.5 --lrr --secret-rat x; did you mean '--lr' for '--lrr'?")
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["run", "--lr", "0.1", "--lrr=2"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.endswith("p run: error: unrecognized arguments: --lrr=2; did you mean '--lr'?\n")
    assert parser.parse_args(["run", "--lr", "-0.5"]).lr == -0.5


def test_no_parser_of_the_command_line_takes_an_abbreviated_option():
    """argparse's allow_abbrev read `imc-grapes train --hid 64` as --hidden 64; a script's abbreviation would also
    change meaning (or fail as ambiguous) when a new option begins the same way. Every parser, subcommands and the
    sweep's own entry point included, now refuses abbreviations."""
    from imc_grapes.cli import build_parser

    def walk(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)

    parsers = list(walk(build_parser()))
    assert len(parsers) == 10 and not any(p.allow_abbrev for p in parsers)  # top, 7 commands, data fetch / verify
    assert SuggestingArgumentParser(allow_abbrev=True).allow_abbrev     # asked for explicitly: still possible


def test_the_sweeps_own_entry_point_refuses_an_abbreviation_too(capsys):
    from imc_grapes.sweep.cli import main as sweep_main

    with pytest.raises(SystemExit) as exc:
        sweep_main(["s.toml", "--stat"])     # python -m imc_grapes.sweep: was read as --status
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == ("imc-grapes sweep: error: unrecognized arguments: --stat; "
                                                        "did you mean '--status'?")


@pytest.mark.parametrize("value, expected", [("-1e-3", -1e-3), ("-2E+2", -200.0), ("-.5", -0.5), ("-3.", -3.0),
                                             ("-7", -7.0), ("-inf", float("-inf")), ("-Infinity", float("-inf"))])
def test_a_negative_number_in_any_float_spelling_is_an_options_value(value, expected):
    """argparse's own pattern (``-1``, ``-0.5``) took ``-1e-3`` or ``-inf`` for an option ("expected one argument"),
    so the option's range check never ran; a negative number in any spelling ``float`` reads is now a value."""
    p = SuggestingArgumentParser(prog="prog")
    p.add_argument("--lr", type=float)
    p.add_argument("--x", type=float, nargs="+")
    got = p.parse_args(["--lr", value, "--x", "1", value])
    assert got.lr == expected and got.x == [1.0, expected]
    nan = p.parse_args(["--lr", "-nan"]).lr
    assert nan != nan


def test_an_option_is_still_an_option(capsys):
    """Words that are no number (``-e3``, ``-1e``, ``-x``) stay options: unknown ones are refused as before."""
    p = SuggestingArgumentParser(prog="prog")
    p.add_argument("--lr", type=float)
    for word in ("-e3", "-1e", "-x", "--lr2"):
        with pytest.raises(SystemExit):
            p.parse_args(["--lr", word])
    capsys.readouterr()
