"""Cleaning rules on Weibo-style text, PII, width/script normalisation, length filters."""

from __future__ import annotations

import pytest

from workbench.config import CleanConfig, PIIConfig
from workbench.corpus.clean import Cleaner, valid_id_card


def clean(text: str, **kw) -> tuple[str, str | None]:
    return Cleaner(CleanConfig(min_chars=1, **kw)).clean(text)


@pytest.mark.parametrize("raw,expected", [
    ("转发微博 https://t.cn/A6xyZ12看看这个", "转发微博 看看这个"),   # URL stops at CJK
    ("官网www.example.com/a?b=1,欢迎", "官网 欢迎"),
    ("@小明_2020 你好啊", "你好啊"),
    ("回复@张三:说得对", "说得对"),
    ("回复@张三：说得对", "说得对"),  # full-width colon
    ("太好了//@李四:确实//@王五: 同意", "太好了 确实 同意"),
    ("今天#北京天气#很好", "今天 北京天气 很好"),
    ("笑死[哈哈][doge]了", "笑死了"),
    ("参考文献[1]说", "参考文献[1]说"),  # not an emoticon code
    ("ｉＰｈｏｎｅ１５　真贵！", "iPhone15 真贵！"),  # alnum: CJK punctuation stays
    ("零\u200b宽\u200d字\ufeff符", "零宽字符"),
    ("多   个  空格\n\n\n换行", "多 个 空格\n换行"),
])
def test_weibo_and_normalisation_rules(raw, expected):
    assert clean(raw)[0] == expected


def test_switches_turn_rules_off():
    raw = "@小明 看 #话题# [哈哈] http://x.cn //@a:b"
    out, _ = clean(raw, urls=False, mentions=False, hashtags="off", emoji_codes=False, repost_chains="off")
    assert out == raw


def test_hashtag_drop_and_repost_drop():
    assert clean("今天#北京天气#很好", hashtags="drop")[0] == "今天 很好"
    assert clean("我的评论//@李四:他的评论//@王五:更早的", repost_chains="drop")[0] == "我的评论"


def test_fullwidth_all_and_unicode_emoji():
    assert clean("你好，世界！", fullwidth="all")[0] == "你好,世界!"
    assert clean("好开心😂👍🏻啊", unicode_emoji="drop")[0] == "好开心啊"
    assert clean("好开心😂啊")[0] == "好开心😂啊"  # kept by default


def test_traditional_to_simplified():
    # OpenCC t2s converts characters, not regional vocabulary (軟體 → 软体, not 软件).
    assert clean("這個軟體的體驗很好，發現問題", traditional_to_simplified=True)[0] == "这个软体的体验很好，发现问题"


def test_pii_scrubbing():
    pii = PIIConfig(enabled=True)
    # 11010519491231002X is the standard example ID with a valid check digit.
    text = "联系13812345678或+86 139-1234-5678，邮箱a.b@qq.com，身份证11010519491231002X，订单110105194912310021"
    out, _ = clean(text, pii=pii)
    assert out == "联系<PHONE>或<PHONE>，邮箱<EMAIL>，身份证<IDCARD>，订单110105194912310021"
    c = Cleaner(CleanConfig(pii=pii))
    c.clean(text)
    assert c.counts["pii_phone"] == 2 and c.counts["pii_email"] == 1 and c.counts["pii_id_card"] == 1


def test_email_is_not_eaten_by_mention_rule_when_pii_off():
    assert clean("联系a@qq.com")[0] == "联系a .com"  # documented order: mentions strip @qq


def test_id_checksum():
    assert valid_id_card("11010519491231002X") and not valid_id_card("110105194912310021")


@pytest.mark.parametrize("text,kw,reason", [
    ("", {}, "empty"),
    ("[哈哈]", {}, "empty"),
    ("好", {"min_chars": 2}, "too_short"),
    ("很长" * 10, {"max_chars": 5}, "too_long"),
    ("mostly english words here 中", {"min_cjk_ratio": 0.5}, "low_cjk_ratio"),
    ("中文为主的句子 ok", {"min_cjk_ratio": 0.5}, None),
])
def test_length_and_script_filters(text, kw, reason):
    kw = {"min_chars": 1, **kw}
    assert Cleaner(CleanConfig(**kw)).clean(text)[1] == reason


def test_punct_to_ascii_for_google_vocab():
    assert clean("他说：“好的”——‘真的’…", punct_to_ascii=True)[0] == '他说："好的"--\'真的\'...'
    assert clean("他说：“好的”")[0] == "他说：“好的”"  # off by default


def _reference_clean(c, text: str) -> str:
    """The cleaning rules applied one after another with no shortcut: every regex on every
    text, each character map in its own pass (what Cleaner.clean did before its trigger
    tests and merged table)."""
    from workbench.corpus import clean as cl

    cfg = c.cfg
    if c._invisible is not None:
        text = text.replace("\r\n", "\n").replace("\r", "\n").translate(c._invisible)
    if c._width is not None:
        text = text.translate(c._width)
    if cfg.punct_to_ascii:
        text = text.translate(cl._PUNCT_TO_ASCII)
    if cfg.pii.enabled:
        text = c._scrub_emails(text)
        text = cl.ID_CARD_RE.sub(c._id_card, text)
        text = cl.PHONE_RE.sub(cfg.pii.phone, text)
    if cfg.urls:
        text = cl.URL_RE.sub(" ", text)
    if cfg.reply_prefix:
        text = cl.REPLY_RE.sub("", text)
    if cfg.repost_chains == "drop":
        m = cl.REPOST_MARK_RE.search(text)
        text = text[: m.start()] if m else text
    elif cfg.repost_chains == "keep_text":
        text = cl.REPOST_MARK_RE.sub(" ", text)
    if cfg.mentions:
        text = cl.MENTION_RE.sub(" ", text)
    if cfg.hashtags == "keep_text":
        text = cl.HASHTAG_RE.sub(r" \1 ", text)
    elif cfg.hashtags == "drop":
        text = cl.HASHTAG_RE.sub(" ", text)
    if cfg.emoji_codes:
        text = cl.EMOJI_CODE_RE.sub("", text)
    if cfg.whitespace:
        text = cl._NEWLINES_RE.sub("\n", cl._SPACES_RE.sub(" ", text)).strip()
    return text


@pytest.mark.parametrize("overrides", [{}, {"punct_to_ascii": True, "hashtags": "drop", "repost_chains": "drop"},
                                       {"repost_chains": "keep_text", "pii": {"enabled": True}}])
def test_trigger_shortcuts_change_no_text(review_lines, overrides):
    """Cleaner.clean skips a rule when its trigger character is absent and maps characters
    in one merged table; on real reviews and on texts built to hit every rule (full-width
    marks, www. links, 回复 / //@ chains, IDs and phones, curly quotes, CR LF) it gives what
    applying every rule in turn gives."""
    from workbench.config import CleanConfig
    from workbench.corpus.clean import Cleaner

    cases = list(review_lines) + [
        "回复@小明_123: 你说得对！//@老王：转发微博 #今日话题# [哈哈] www.Example.com/a?b=1",
        "ＡＢＣ１２３＠某人　你好“引号”——破折号…… https://t.cn/A6xyz 联系13812345678或 110101199003074578",
        "行一\r\n行二\r行三\u200b\u00ad 邮箱 a.b@example.com  ＃全角话题＃ ［doge］ //＠某某 ：尾巴",
        "身份证 11010119900307457X 电话 +86 138-1234-5678 订单 123456789012345678 [1] #一# #二#",
        "", "   ", "@", "//", "#", "[", "回复", "1", "www.", "://",
    ]
    c = Cleaner(CleanConfig(**overrides))
    ref = Cleaner(CleanConfig(**overrides))
    for text in cases:
        assert c.clean(text)[0] == _reference_clean(ref, text), text
