"""Text files in legacy East Asian encodings (GBK, Big5, Shift-JIS, EUC-KR) and other code
pages are decoded to the text that was saved, not stored as mojibake; Western files read as
before."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.paths import SAMPLE_DOCS_ZH_DIR
from loaders.parsers import decode_text, parse_file

pytestmark = pytest.mark.unit

# Several sentences each, as a real notice or guide would hold.
SIMPLIFIED = (
    "关于翠屏水库闸门检修期间临时停水的通告。检修期间，老街、茶市街和北岸新村每天上午九点至"
    "下午五点暂停供水，其余时间正常供水。请各位居民提前储水，并关好家中的水龙头。\n"
)
TRADITIONAL = (
    "竹編博物館參觀指南：週二至週日開放，每週一閉館。成人票三十元，六十五歲以上長者免票。"
    "乘坐三路公車在博物館站下車即到。\n"
)
JAPANESE = (
    "富士山の麓にある小さな町の観光案内です。毎週月曜日は休館日となります。"
    "入館料は大人五百円、小学生以下は無料です。\n"
)
KOREAN = (
    "서울 근교의 작은 마을 안내서입니다. 매주 월요일은 휴관합니다. "
    "입장료는 어른 삼천 원이며 어린이는 무료입니다.\n"
)


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        pytest.param(SIMPLIFIED, "gbk", id="GBK"),
        pytest.param(SIMPLIFIED, "gb18030", id="GB18030"),
        pytest.param(TRADITIONAL, "big5", id="Big5"),
        pytest.param(JAPANESE, "shift_jis", id="Shift-JIS"),
        pytest.param(JAPANESE, "euc_jp", id="EUC-JP"),
        pytest.param(KOREAN, "euc_kr", id="EUC-KR"),
        pytest.param("Привет, это небольшой текст на русском языке.\n", "cp1251", id="cp1251"),
        pytest.param("Καλημέρα, αυτό είναι ένα μικρό κείμενο.\n", "cp1253", id="Greek"),
        pytest.param("สวัสดีครับ นี่คือข้อความภาษาไทยสั้นๆ สำหรับทดสอบ\n", "cp874", id="Thai"),
    ],
)
def test_legacy_encodings_decode_to_the_saved_text(text: str, encoding: str) -> None:
    data = text.encode(encoding)
    assert data.decode("cp1252", errors="replace") != text  # the old fallback got this wrong
    assert decode_text(data) == text


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        # So short that the bytes are valid in several encodings: the likelier one wins.
        pytest.param("停水通告", "gbk", id="GBK, 4 characters"),
        pytest.param("參觀指南", "big5", id="Big5, 4 characters"),
        pytest.param("休館日のご案内", "shift_jis", id="Shift-JIS, 7 characters"),
        pytest.param("휴관 안내", "euc_kr", id="EUC-KR, 4 syllables"),
        pytest.param(
            "README for the project: 安装方法见下文。Install with pip.", "gbk", id="mixed"
        ),
    ],
)
def test_short_texts_pick_the_likely_encoding(text: str, encoding: str) -> None:
    assert decode_text(text.encode(encoding)) == text


@pytest.mark.parametrize(
    ("name", "content", "encoding", "expected"),
    [
        pytest.param(
            "notice.html",
            '<html><head><meta charset="gbk"><title>通告</title></head>'
            "<body><h1>停水通告</h1><p>老街明天上午九点至下午五点停水，请提前储水。</p></body></html>",
            "gbk",
            "老街明天上午九点至下午五点停水，请提前储水。",
            id="html declaring gbk",
        ),
        pytest.param(
            "guide.md",
            "# 參觀指南\n\n週一閉館，成人票三十元。\n",
            "big5",
            "週一閉館，成人票三十元。",
            id="markdown in Big5",
        ),
        pytest.param(
            "buses.csv",
            "时间,地点\n06:30,岚溪镇汽车站\n",
            "gbk",
            "| 时间 | 地点 |\n| --- | --- |\n| 06:30 | 岚溪镇汽车站 |",
            id="csv in GBK",
        ),
        pytest.param(
            "memo.txt", JAPANESE.replace("\n", "\r\n"), "shift_jis", "毎週月曜日は休館日", id="txt"
        ),
    ],
)
def test_files_in_legacy_encodings_parse_to_their_text(
    tmp_path: Path, name: str, content: str, encoding: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content.encode(encoding))
    documents = parse_file(path, name)
    assert expected in "\n".join(d.page_content for d in documents)


def test_the_gbk_sample_notice_reads_as_chinese() -> None:
    path = SAMPLE_DOCS_ZH_DIR / "镇务" / "水库停水通告.txt"
    text = parse_file(path, "镇务/水库停水通告.txt")[0].page_content
    assert "翠屏水库" in text
    assert "周立群" in text
