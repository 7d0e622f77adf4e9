import io

import pytest

from ssamba.progress import LineProgress, progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_one_line_every_n_updates_with_the_real_total():
    stream = io.StringIO()
    bar = progress(250, "pretrain_ssamba", unit="step", every=100, stream=stream)
    assert isinstance(bar, LineProgress)
    for _ in range(250):
        bar.update()
        bar.set_postfix({"loss": "1.234"})
    bar.close()
    lines = stream.getvalue().splitlines()
    assert [line.split(" step")[0] for line in lines] == ["pretrain_ssamba: 100/250", "pretrain_ssamba: 200/250",
                                                         "pretrain_ssamba: 250/250"]
    assert "loss 1.234" in lines[-1] and "\r" not in stream.getvalue()


def test_silenced_progress_still_writes_messages_and_a_terminal_gets_a_bar():
    stream = io.StringIO()
    bar = progress(10, "x", enabled=False, every=1, stream=stream)
    bar.update(10)
    bar.write("epoch 1: acc 0.5")
    bar.close()
    assert stream.getvalue() == "epoch 1: acc 0.5\n"
    terminal = _Terminal()
    bar = progress(10, "x", stream=terminal)
    bar.update(10)
    bar.close()
    assert not isinstance(bar, LineProgress) and "\r" in terminal.getvalue()
    with pytest.raises(ValueError, match="every"):
        progress(10, "x", every=0, stream=io.StringIO())
