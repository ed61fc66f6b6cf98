"""Write the Chinese sample corpus (岚溪镇, a made-up mountain town) to data/docs-zh/, its
question file to data/eval/questions-zh.jsonl and the same passages in BEIR form to
data/eval/lanxi-zh/ (so `python -m app.eval --dataset data/eval/lanxi-zh` scores it).

Run from anywhere: python data/make_sample_docs_zh.py (output is byte-identical on every run on
the same fonts). The PDF needs a font with Chinese glyphs: Debian's `fonts-droid-fallback`
(`apt-get install fonts-droid-fallback`), or point LOCALRAG_CJK_FONT at any .ttf that has them.

Every file is written from a list of passages (a paragraph, a slide, a table): the BEIR corpus
holds exactly those passages, and each question names the passage that answers it, so the two
forms never disagree. Like real Chinese folders, file and folder names are Chinese, and the
water notice is a GBK file with Windows line ends, as an older office PC would save it.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path

from docx import Document
from fpdf import FPDF
from make_sample_docs import AUTHOR, FIXED_TIME, normalized_zip, write_text
from pptx import Presentation

DATA_DIR = Path(__file__).resolve().parent
DOCS_DIR = DATA_DIR / "docs-zh"
QUESTIONS_FILE = DATA_DIR / "eval" / "questions-zh.jsonl"
BEIR_DIR = DATA_DIR / "eval" / "lanxi-zh"
FONT_CANDIDATES = [
    os.environ.get("LOCALRAG_CJK_FONT", ""),
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
]


def zh(text: str) -> str:
    """Join a wrapped triple-quoted Chinese paragraph: Chinese puts no space between lines."""
    return "".join(line.strip() for line in text.strip().splitlines())


@dataclass(frozen=True)
class Passage:
    key: str  # the BEIR document id
    heading: str  # section, slide or page title ("" for none)
    text: str


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    passage: str  # key of the passage that holds the answer


@dataclass(frozen=True)
class SampleDoc:
    path: str  # relative to data/docs-zh, forward slashes
    title: str
    passages: tuple[Passage, ...]
    write: Callable[[Path, SampleDoc], None]
    questions: tuple[Question, ...]
    pages: dict[str, int] | None = None  # passage key -> 1-based page, for the PDF

    def passage(self, key: str) -> Passage:
        return next(p for p in self.passages if p.key == key)


def _sections(doc: SampleDoc) -> list[tuple[str, list[str]]]:
    """Passages grouped by heading, in order."""
    grouped: list[tuple[str, list[str]]] = []
    for p in doc.passages:
        if grouped and grouped[-1][0] == p.heading:
            grouped[-1][1].append(p.text)
        else:
            grouped.append((p.heading, [p.text]))
    return grouped


# --------------------------------------------------------------------------------------------
# 岚溪镇简介.md
# --------------------------------------------------------------------------------------------

GUIDE = (
    Passage(
        "guide-01",
        "概况",
        zh("""
        岚溪镇位于云岫县东北部的群山之中，岚溪从镇中由北向南穿过，在镇南的鹭鸶滩汇入白鹭河。
        全镇常住人口12,640人（2020年人口普查），其中一半以上的家庭以种茶、制茶为生。
        镇上最高处是望霞峰，海拔1,362米，晴天的清晨站在峰顶可以看到云海从山谷里升起。
        """),
    ),
    Passage(
        "guide-02",
        "概况",
        zh("""
        镇徽是一只衔着茶枝的白鹭，图案由本镇小学的美术老师在1987年设计。
        自1993年起，岚溪镇与东海边的渔港石矶镇结为友好城镇，两镇每年互派学生交流一周。
        """),
    ),
    Passage(
        "guide-03",
        "历史",
        zh("""
        据镇志记载，明万历二十六年（1598年），徽州茶商沈青禾沿岚溪逆流而上寻找好茶，
        在溪边的缓坡上开辟了第一片茶园。此后山民陆续迁来定居，沿溪形成集市，逐渐发展成镇。
        清代中叶，岚溪的茶叶经白鹭河水运到府城，茶市街上的老茶栈至今仍保留着当年的木招牌。
        """),
    ),
    Passage(
        "guide-04",
        "听雨桥",
        zh("""
        镇中心横跨岚溪的廊桥名叫听雨桥，全长86米，桥上建有十三间廊屋，供行人避雨歇脚。
        它由木匠陆明远主持修建，于1872年落成，取代了两年前被山洪冲毁的旧木桥。
        桥东头的石碑上刻着捐资修桥的一百零八户人家的姓名。
        """),
    ),
    Passage(
        "guide-05",
        "放溪灯",
        zh("""
        岚溪最受欢迎的传统是放溪灯，每年农历七月十五的傍晚举行。天黑以后，各家在听雨桥下
        把点着蜡烛的纸灯放进溪水，看着它们顺流漂向鹭鸶滩。有记载的第一次放溪灯是在1926年，
        为的是纪念前一年山洪中遇难的十七名采茶人。活动最后在文化礼堂前有一场采茶戏演出。
        """),
    ),
    Passage(
        "guide-06",
        "出行",
        zh("""
        镇区不大，老街和茶市街步行十分钟就能走完，只有去望霞峰要爬一段山路。
        镇汽车站每天有班车开往云岫县城和望霞峰景区，具体时间见交通文件夹里的班车时刻表。
        镇上的民宿大多集中在听雨桥两侧，春茶季节和放溪灯前后需要提前预订。
        """),
    ),
)


def write_guide(path: Path, doc: SampleDoc) -> None:
    lines = [f"# {doc.title}", ""]
    for heading, paragraphs in _sections(doc):
        lines += [f"## {heading}", ""]
        for paragraph in paragraphs:
            lines += [paragraph, ""]
    write_text(path, "\n".join(lines))


# --------------------------------------------------------------------------------------------
# 镇务/水库停水通告.txt (GBK, CRLF)
# --------------------------------------------------------------------------------------------

NOTICE = (
    Passage(
        "notice-01",
        "",
        zh("""
        因翠屏水库泄洪闸门老化，需要进行检修，检修工程定于2025年4月7日至4月18日进行。
        施工由县水利工程队负责，期间水库水位将降低三米，镇区自来水厂改由备用水源取水，
        供水量减少约一半。
        """),
    ),
    Passage(
        "notice-02",
        "",
        zh("""
        检修期间，老街、茶市街和北岸新村每天上午九点至下午五点暂停供水，其余时间正常供水。
        请各位居民提前储水，并关好家中的水龙头，以免恢复供水时跑水。
        """),
    ),
    Passage(
        "notice-03",
        "",
        zh("""
        停水期间，镇政府安排两辆送水车，每天上午十点和下午三点在茶市广场免费供应饮用水。
        行动不便的老人可以打电话登记，由志愿者把水送到家门口。
        """),
    ),
    Passage(
        "notice-04",
        "",
        zh("""
        施工期间，水库大坝下游五百米以内禁止钓鱼、游泳和放牧，请家长看管好孩子。
        通往大坝的环库路也将封闭，前往望霞峰的游客请改走茶园小道。
        """),
    ),
    Passage(
        "notice-05",
        "",
        zh("""
        如有疑问，请联系镇水务站，办公地点在镇政府一楼，工作日上午八点半至下午五点办公。
        """),
    ),
)


def write_notice(path: Path, doc: SampleDoc) -> None:
    header = ["岚溪镇人民政府", doc.title, "岚政通〔2025〕12号"]
    footer = ["水务站站长：周立群", "岚溪镇人民政府", "2025年3月20日"]
    body = [p.text for p in doc.passages]
    text = "\n".join(header) + "\n\n" + "\n\n".join(body) + "\n\n" + "\n".join(footer) + "\n"
    # An older office PC saves GBK with Windows line ends; the loader must read both.
    path.write_bytes(text.replace("\n", "\r\n").encode("gbk"))


# --------------------------------------------------------------------------------------------
# 茶社/合作社沿革.html
# --------------------------------------------------------------------------------------------

HISTORY = (
    Passage(
        "history-01",
        "缘起",
        zh("""
        本世纪初，山里的茶叶卖不上价钱，茶贩压价收购鲜叶，年轻人纷纷外出打工，
        不少茶园荒了下来。2009年冬天，几位老茶农在沈家祠堂里商量，要自己把茶做好、卖好。
        """),
    ),
    Passage(
        "history-02",
        "缘起",
        zh("""
        2010年3月18日，岚溪雾芽茶专业合作社在沈家祠堂正式成立，最初有37户茶农入社。
        第一任理事长是退休的中学语文教师顾采薇，她带着社员跑遍了周边的茶叶市场。
        """),
    ),
    Passage(
        "history-03",
        "雾芽茶",
        zh("""
        雾芽茶只在清明节以前采摘，标准是一芽一叶初展，而且茶园必须在海拔八百米以上，
        那里常年云雾缭绕，茶叶生长缓慢，滋味格外鲜爽。目前合作社共有茶园2,350亩。
        """),
    ),
    Passage(
        "history-04",
        "雾芽茶",
        zh("""
        雾芽茶的制作要经过摊晾、杀青、揉捻、理条和炭火烘干五道工序，全靠手工完成，
        一位熟练的师傅一晚上也只能炒出两斤干茶。2016年，岚溪雾芽茶制作技艺被列入
        省级非物质文化遗产名录。
        """),
    ),
    Passage(
        "history-05",
        "入社",
        zh("""
        岚溪镇以及相邻的上坪村、松坳村的茶农都可以申请入社。每股股金五百元，
        不论持有多少股，每位社员在社员大会上都只有一票。合作社的盈余主要用于添置设备
        和培训社员，年底按交售鲜叶的数量给社员返利。
        """),
    ),
    Passage(
        "history-06",
        "荣誉",
        zh("""
        2021年，岚溪雾芽茶在江南春茶品鉴会上获得金奖，这是合作社第一次在全国性的评比中获奖。
        同年，合作社被评为省级示范合作社。
        """),
    ),
)


def write_history(path: Path, doc: SampleDoc) -> None:
    lines = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN">',
        "<head>",
        '  <meta charset="utf-8">',
        f"  <title>{html.escape(doc.title)}</title>",
        "</head>",
        "<body>",
        f"  <h1>{html.escape(doc.title)}</h1>",
    ]
    for heading, paragraphs in _sections(doc):
        lines.append(f"  <h2>{html.escape(heading)}</h2>")
        lines.extend(f"  <p>{html.escape(p)}</p>" for p in paragraphs)
    lines += ["</body>", "</html>"]
    write_text(path, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# 交通/班车时刻表.csv (one passage: the whole table, as the loader renders it)
# --------------------------------------------------------------------------------------------

STATION, COUNTY, PEAK = "岚溪镇汽车站", "云岫县城客运站", "望霞峰景区"
TIMETABLE_HEADER = ["发车时间", "出发站", "到达站", "车型", "运行日", "车程（分钟）", "备注"]
TIMETABLE_ROWS = [
    ["06:30", STATION, COUNTY, "中巴", "每天", "55", "首班车；可带自行车"],
    ["07:40", STATION, PEAK, "景区小巴", "每天", "40", ""],
    ["08:10", COUNTY, STATION, "中巴", "每天", "55", ""],
    ["09:20", STATION, COUNTY, "中巴", "每天", "55", "途经茶市广场，可招手停车"],
    ["11:00", PEAK, STATION, "景区小巴", "每天", "40", ""],
    ["13:30", STATION, COUNTY, "中巴", "每天", "55", ""],
    ["15:00", STATION, PEAK, "景区小巴", "周六、周日", "40", "看日落专线"],
    ["16:10", COUNTY, STATION, "中巴", "周一至周五", "55", "学生专车，学生优先上车"],
    ["18:30", PEAK, STATION, "景区小巴", "周六、周日", "40", "景区末班车"],
    ["19:20", COUNTY, STATION, "中巴", "周五至周日", "55", "末班车；遇暴雨停开"],
]


def timetable_text() -> str:
    """The table as the loader renders a CSV: one row per line, each cell with its header."""
    return "\n".join(
        " | ".join(f"{h}: {v}" for h, v in zip(TIMETABLE_HEADER, row, strict=True) if v)
        for row in TIMETABLE_ROWS
    )


TIMETABLE = (Passage("timetable-01", "", timetable_text()),)


def write_timetable(path: Path, doc: SampleDoc) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(TIMETABLE_HEADER)
        writer.writerows(TIMETABLE_ROWS)


# --------------------------------------------------------------------------------------------
# 茶社/2024年社员大会纪要.docx
# --------------------------------------------------------------------------------------------

EQUIPMENT_TABLE = [
    ["设备", "数量", "购置年份", "备注"],
    ["滚筒杀青机", "4台", "2019", "明年更换两台"],
    ["揉捻机", "6台", "2020", ""],
    ["保鲜冷库", "1座", "2022", "容量80吨"],
]

MINUTES = (
    Passage(
        "minutes-01",
        "出席情况",
        zh("""
        岚溪雾芽茶专业合作社2024年社员大会于2024年12月8日下午两点在岚溪镇文化礼堂召开。
        应到社员268人，实到212人，超过章程规定的半数。理事长林秋生主持会议，
        秘书唐晓雯负责记录。
        """),
    ),
    Passage(
        "minutes-02",
        "理事长报告",
        zh("""
        林秋生报告，2024年合作社共收购社员鲜叶486吨，茶叶销售额3,120万元，比上一年增长14%，
        是合作社成立以来最好的一年。三月中旬的倒春寒让海拔较低的茶园减产约两成。
        """),
    ),
    Passage(
        "minutes-03",
        "理事长报告",
        zh("""
        她感谢了在春茶季节连续加班的三十多位制茶师傅，也感谢上坪村的社员在山路塌方期间
        用摩托车把鲜叶一趟趟运下山。
        """),
    ),
    Passage(
        "minutes-04",
        "加工设备",
        "大会听取了加工设备情况的汇报，现有主要设备见下表。\n"
        + "\n".join(" | ".join(row) for row in EQUIPMENT_TABLE),
    ),
    Passage(
        "minutes-05",
        "决议",
        zh("""
        决议一：投资二百六十万元，在北岸新村建设一座新的茶叶加工厂，命名为“云栖茶坊”，
        由县里的青山建筑公司承建。表决结果：赞成189票，反对15票，弃权8票，决议通过。
        """),
    ),
    Passage(
        "minutes-06",
        "决议",
        zh("""
        决议二：自2025年3月1日起，社员子女考上大学的，合作社每年发放助学金三千元，
        直至毕业。全体到会社员一致通过。
        """),
    ),
    Passage(
        "minutes-07",
        "其他事项",
        zh("""
        茶市街门店的租约续签给谢婉仪，租期五年，租金每年上涨百分之三。会议于下午五点四十分结束。
        """),
    ),
)


def write_minutes(path: Path, doc: SampleDoc) -> None:
    document = Document()
    document.add_heading("岚溪雾芽茶专业合作社", level=0)
    document.add_paragraph("2024年社员大会会议纪要")
    for heading, paragraphs in _sections(doc):
        document.add_heading(heading, level=1)
        for paragraph in paragraphs:
            if paragraph.startswith("大会听取了加工设备"):
                document.add_paragraph(paragraph.split("\n", 1)[0])
                table = document.add_table(rows=len(EQUIPMENT_TABLE), cols=4)
                table.style = "Table Grid"
                for row, values in zip(table.rows, EQUIPMENT_TABLE, strict=True):
                    for cell, value in zip(row.cells, values, strict=True):
                        cell.text = value
            else:
                document.add_paragraph(paragraph)
    props = document.core_properties
    props.title = doc.title
    props.author = props.last_modified_by = AUTHOR
    props.created = props.modified = FIXED_TIME
    props.revision = 1
    buffer = io.BytesIO()
    document.save(buffer)
    path.write_bytes(normalized_zip(buffer.getvalue()))


# --------------------------------------------------------------------------------------------
# 博物馆/参观指南.pptx (one passage per slide)
# --------------------------------------------------------------------------------------------

GUIDE_SLIDES = (
    Passage(
        "visit-01",
        "镇馆之宝",
        "镇馆之宝是一件高2.4米的竹编屏风《百鸟朝凤》\n"
        "屏风由竹编艺人何守拙花了整整三年编成，用竹丝细如发丝\n"
        "二楼还陈列着清代至今的竹编食盒、茶篓和花篮三百多件",
    ),
    Passage(
        "visit-02",
        "开放时间",
        "周二至周日 9:00至17:00，16:30 停止入场\n"
        "每周一闭馆（法定节假日除外）\n"
        "七月和八月延长开放至 19:00",
    ),
    Passage(
        "visit-03",
        "门票",
        "成人票30元，学生凭学生证半价\n"
        "65岁以上老人和身高1.2米以下的儿童免票\n"
        "每周三下午免费开放，需在前台登记",
    ),
    Passage(
        "visit-04",
        "怎么来",
        "乘坐镇内3路公交车，在“竹编博物馆”站下车即到\n"
        "自驾车可停在博物馆东侧停车场，共有120个车位\n"
        "从听雨桥步行过来大约十五分钟",
    ),
    Passage(
        "visit-05",
        "竹编体验课",
        "每周六上午开设竹编体验课，由老艺人手把手教学\n"
        "每人80元，材料费已包含在内，作品可以带走\n"
        "每期限15人，请提前三天预约",
    ),
)


def write_visit_guide(path: Path, doc: SampleDoc) -> None:
    prs = Presentation()
    title_slide = prs.slides.add_slide(prs.slide_layouts[0])
    title_slide.shapes.title.text = "岚溪竹编博物馆"
    title_slide.placeholders[1].text = "2025年参观指南"
    for passage in doc.passages:
        bullets = passage.text.split("\n")
        slide = prs.slides.add_slide(prs.slide_layouts[1])
        slide.shapes.title.text = passage.heading
        body = slide.placeholders[1].text_frame
        body.text = bullets[0]
        for bullet in bullets[1:]:
            body.add_paragraph().text = bullet
    props = prs.core_properties
    props.title = doc.title
    props.author = props.last_modified_by = AUTHOR
    props.created = props.modified = FIXED_TIME
    props.revision = 1
    buffer = io.BytesIO()
    prs.save(buffer)
    path.write_bytes(normalized_zip(buffer.getvalue()))


# --------------------------------------------------------------------------------------------
# 博物馆/2024年度报告.pdf (one section per page, so page numbers matter)
# --------------------------------------------------------------------------------------------

REPORT_PAGES = (
    (
        "一、馆长致辞",
        (
            Passage(
                "report-01",
                "一、馆长致辞",
                zh("""
                2024年是岚溪竹编博物馆开馆以来最忙碌的一年。全年接待观众58,730人次，
                比上一年的41,200人次增长了四成多，而且没有一天因为人手不足而临时闭馆。
                """),
            ),
            Passage(
                "report-02",
                "一、馆长致辞",
                zh("""
                博物馆的讲解和导览主要依靠志愿者。到年底，登记在册的志愿者共有96人，
                其中二十一人今年通过了讲解员培训，可以独立带团讲解。
                """),
            ),
            Passage(
                "report-03",
                "一、馆长致辞",
                zh("""
                全年最忙的一天是10月2日，国庆假期的第二天，一共来了3,150位观众，
                排队的人从大门一直排到了听雨桥头，茶水间的开水烧了一整天。
                """),
            ),
            Passage("report-04", "一、馆长致辞", "馆长：许知秋"),
        ),
    ),
    (
        "二、藏品与研究",
        (
            Passage(
                "report-05",
                "二、藏品与研究",
                zh("""
                2024年博物馆新增藏品214件，其中一百二十件是镇上老艺人家属捐赠的竹编工具和半成品。
                """),
            ),
            Passage(
                "report-06",
                "二、藏品与研究",
                zh("""
                修复组由退休木匠钟伯年带领，用了七个月修复了一件清代道光年间的三层竹编食盒，
                食盒上的漆画《采茶图》已经重新展出。
                """),
            ),
            Passage(
                "report-07",
                "二、藏品与研究",
                zh("""
                我们与省美术学院合作，整理出版了《岚溪竹编图谱》，收录了一百零六种传统编织纹样，
                并在学院举办了为期一个月的巡回展览。
                """),
            ),
        ),
    ),
    (
        "三、财务与2025年计划",
        (
            Passage(
                "report-08",
                "三、财务与2025年计划",
                zh("""
                2024年博物馆总收入186万元，门票和体验课收入约占六成。
                县文化发展基金资助了45万元，专门用于库房的防潮改造。
                """),
            ),
            Passage(
                "report-09",
                "三、财务与2025年计划",
                zh("""
                全年最大的一笔支出是更换展厅的恒温恒湿系统，花费38万元。
                原来的设备在梅雨季节发生故障，导致两件竹编作品轻微发霉。
                """),
            ),
            Passage(
                "report-10",
                "三、财务与2025年计划",
                zh("""
                2025年我们计划在二楼建设数字展厅，志愿者们已经给它取名“竹影”，
                观众可以在屏幕上一层层拆开一件竹编作品，看清它的编法。筹款目标为120万元。
                """),
            ),
        ),
    ),
)
REPORT = tuple(p for _, passages in REPORT_PAGES for p in passages)
REPORT_PAGE_OF = {p.key: n for n, (_, ps) in enumerate(REPORT_PAGES, start=1) for p in ps}


def cjk_font() -> str:
    for candidate in FONT_CANDIDATES:
        if candidate and Path(candidate).is_file():
            return candidate
    raise SystemExit(
        "The PDF needs a font with Chinese glyphs: apt-get install fonts-droid-fallback, "
        "or set LOCALRAG_CJK_FONT to a .ttf that has them."
    )


def write_report(path: Path, doc: SampleDoc) -> None:
    import matplotlib  # its DejaVu Sans has the digits and Latin letters the CJK font lacks

    pdf = FPDF(format="A4")
    pdf.add_font("latin", fname=Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf")
    pdf.add_font("cjk", fname=cjk_font())
    pdf.set_fallback_fonts(["cjk"])
    pdf.set_title(doc.title)
    pdf.set_author(AUTHOR)
    pdf.set_producer(AUTHOR)
    pdf.set_creation_date(FIXED_TIME)
    pdf.set_auto_page_break(auto=False)
    for number, (heading, passages) in enumerate(REPORT_PAGES, start=1):
        pdf.add_page()
        if number == 1:
            pdf.set_font("latin", size=16)
            # Latin text first: when a page's first glyphs come from the fallback font, pypdf
            # extracts the next run of the main font as raw glyph ids.
            pdf.multi_cell(0, 9, "2024年度报告", new_x="LMARGIN", new_y="NEXT")
            pdf.multi_cell(0, 9, "岚溪竹编博物馆")
            pdf.ln(4)
        pdf.set_font("latin", size=13)
        pdf.multi_cell(0, 8, heading)
        pdf.ln(2)
        pdf.set_font("latin", size=11)
        for passage in passages:
            pdf.multi_cell(0, 6, passage.text)
            pdf.ln(3)
        pdf.set_y(-15)
        pdf.set_font("latin", size=9)
        pdf.cell(0, 10, f"2024年度报告 第{number}页", align="C")
    pdf.output(str(path))


# --------------------------------------------------------------------------------------------
# 博物馆/志愿者通知.eml
# --------------------------------------------------------------------------------------------

EMAIL = (
    Passage("email-01", "", "各位志愿者："),
    Passage(
        "email-02",
        "",
        zh("""
        今年的岚溪竹编市集定在2025年5月17日和18日两天，在听雨桥两岸举行，
        每天上午九点开市。今年有四十多位手艺人摆摊，还会有竹编比赛和非遗传承人的现场表演。
        """),
    ),
    Passage(
        "email-03",
        "",
        zh("""
        市集需要24名志愿者，负责引导游客、维持秩序和照看走失的孩子。
        请在5月5日之前在群里接龙报名，写清楚哪一天有空。
        """),
    ),
    Passage(
        "email-04",
        "",
        zh("""
        另外提醒大家：“竹影”数字展厅4月21日至5月9日施工，二楼展厅暂停开放，
        这段时间的讲解只安排在一楼，请带团的志愿者调整路线。
        """),
    ),
    Passage(
        "email-05",
        "",
        zh("""
        最后说一件家事：在博物馆看了八年大门的老黄狗“阿黄”年纪大了，已经光荣退休，
        现在住在志愿者陈小满家里，就在茶市街。欢迎去看它，但请不要再喂它零食了。
        """),
    ),
)
EMAIL_SIGNATURE = "祝好！\n沈一帆\n岚溪竹编博物馆 宣传教育部"


def write_email(path: Path, doc: SampleDoc) -> None:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "沈一帆 <outreach@lanxi-bamboo-museum.example>"
    msg["To"] = "博物馆志愿者 <volunteers@lanxi-bamboo-museum.example>"
    msg["Subject"] = doc.title
    sent = datetime(2025, 4, 10, 20, 15, 0, tzinfo=timezone(timedelta(hours=8)))
    msg["Date"] = format_datetime(sent)
    msg["Message-ID"] = "<20250410201500.market@lanxi-bamboo-museum.example>"
    body = "\n\n".join(p.text for p in doc.passages) + "\n\n" + EMAIL_SIGNATURE + "\n"
    msg.set_content(body, charset="utf-8", cte="base64")
    path.write_bytes(msg.as_bytes())


# --------------------------------------------------------------------------------------------
# The corpus and its questions, side by side
# --------------------------------------------------------------------------------------------

CORPUS = [
    SampleDoc(
        "岚溪镇简介.md",
        "岚溪镇简介",
        GUIDE,
        write_guide,
        (
            Question("岚溪镇最早是谁开垦茶园的？", "沈青禾", "guide-03"),
            Question("听雨桥有多长？", "86米", "guide-04"),
            Question("放溪灯是在每年的什么时候？", "农历七月十五", "guide-05"),
            Question("岚溪镇现在住着多少人？", "12,640", "guide-01"),
            Question("岚溪镇的友好城镇是哪里？", "石矶镇", "guide-02"),
        ),
    ),
    SampleDoc(
        "镇务/水库停水通告.txt",
        "关于翠屏水库闸门检修期间临时停水的通告",
        NOTICE,
        write_notice,
        (
            Question("水库检修要从哪天持续到哪天？", "2025年4月7日至4月18日", "notice-01"),
            Question("停水的时候去哪里可以领到饮用水？", "茶市广场", "notice-03"),
            Question("检修期间大坝下游多远以内不能游泳？", "五百米", "notice-04"),
            Question("老街每天几点到几点没有自来水？", "上午九点至下午五点", "notice-02"),
        ),
    ),
    SampleDoc(
        "茶社/合作社沿革.html",
        "岚溪雾芽茶专业合作社：我们的故事",
        HISTORY,
        write_history,
        (
            Question("茶叶合作社成立的时候有几户人家参加？", "37户", "history-02"),
            Question("合作社的第一任理事长是谁？", "顾采薇", "history-02"),
            Question("入股合作社一股要多少钱？", "五百元", "history-05"),
            Question("雾芽茶的手工制作技艺哪一年成为省级非遗？", "2016", "history-04"),
        ),
    ),
    SampleDoc(
        "交通/班车时刻表.csv",
        "班车时刻表",
        TIMETABLE,
        write_timetable,
        (
            Question("早上去县城的第一班车几点出发？", "06:30", "timetable-01"),
            Question("坐班车从镇上到望霞峰景区要多少分钟？", "40", "timetable-01"),
            Question("哪一班车经过茶市广场时可以招手上车？", "09:20", "timetable-01"),
            Question("19:20从县城开回镇上的末班车哪几天有？", "周五至周日", "timetable-01"),
        ),
    ),
    SampleDoc(
        "茶社/2024年社员大会纪要.docx",
        "2024年社员大会纪要",
        MINUTES,
        write_minutes,
        (
            Question("2024年社员大会有多少名社员到场？", "212", "minutes-01"),
            Question("合作社要新建的加工厂叫什么名字？", "云栖茶坊", "minutes-05"),
            Question("合作社的保鲜冷库能放多少吨茶叶？", "80吨", "minutes-04"),
            Question("社员的孩子上大学从什么时候开始可以领助学金？", "2025年3月1日", "minutes-06"),
            Question("合作社2024年一共收了多少吨鲜叶？", "486吨", "minutes-02"),
        ),
    ),
    SampleDoc(
        "博物馆/参观指南.pptx",
        "岚溪竹编博物馆参观指南",
        GUIDE_SLIDES,
        write_visit_guide,
        (
            Question("竹编博物馆最珍贵的展品是什么？", "百鸟朝凤", "visit-01"),
            Question("博物馆星期一开门吗？", "闭馆", "visit-02"),
            Question("成年人参观竹编博物馆的门票多少钱？", "30元", "visit-03"),
            Question("去竹编博物馆可以坐几路公交？", "3路", "visit-04"),
        ),
    ),
    SampleDoc(
        "博物馆/2024年度报告.pdf",
        "岚溪竹编博物馆2024年度报告",
        REPORT,
        write_report,
        (
            Question("竹编博物馆的馆长叫什么名字？", "许知秋", "report-04"),
            Question("2024年有多少观众参观了竹编博物馆？", "58,730", "report-01"),
            Question("谁带领修复了那件清代的竹编食盒？", "钟伯年", "report-06"),
            Question("博物馆2024年新收了多少件藏品？", "214件", "report-05"),
            Question("县文化发展基金给博物馆资助了多少钱？", "45万元", "report-08"),
            Question("二楼的数字展厅打算叫什么名字？", "竹影", "report-10"),
        ),
        pages=REPORT_PAGE_OF,
    ),
    SampleDoc(
        "博物馆/志愿者通知.eml",
        "竹编市集招募志愿者、数字展厅施工和阿黄的消息",
        EMAIL,
        write_email,
        (
            Question("竹编市集哪天举办？", "2025年5月17日", "email-02"),
            Question("竹编市集一共需要多少名志愿者？", "24名", "email-03"),
            Question("博物馆那只退休的看门狗叫什么？", "阿黄", "email-05"),
        ),
    ),
]

# Questions the corpus cannot answer: a good pipeline says so instead of making something up.
OUT_OF_CORPUS_QUESTIONS = [
    "澳大利亚的首都是哪个城市？",
    "《红楼梦》的作者是谁？",
    "怎样用 pandas 把一列字符串转换成日期？",
    "在海平面上，水的沸点是多少华氏度？",
    "光合作用主要发生在植物细胞的哪个部分？",
]


def question_records() -> list[dict[str, object]]:
    records: list[dict[str, object]] = []
    for doc in CORPUS:
        for q in doc.questions:
            record: dict[str, object] = {"question": q.question, "source": doc.path}
            record["answer"] = q.answer
            if doc.pages is not None:
                record["page"] = doc.pages[q.passage]
            records.append(record)
    records += [{"question": q, "source": None, "answer": None} for q in OUT_OF_CORPUS_QUESTIONS]
    return records


def beir_records() -> tuple[list[dict[str, str]], list[dict[str, str]], list[str]]:
    """corpus rows, query rows and qrels lines: one document per passage, one query per
    in-corpus question, judged relevant (grade 1) to the passage that answers it."""
    corpus = [
        {
            "_id": p.key,
            "title": f"{doc.title} · {p.heading}" if p.heading else doc.title,
            "text": p.text,
        }
        for doc in CORPUS
        for p in doc.passages
    ]
    queries: list[dict[str, str]] = []
    qrels = ["query-id\tcorpus-id\tscore"]
    for doc in CORPUS:
        for q in doc.questions:
            doc.passage(q.passage)  # fails loudly on a typo in a passage key
            query_id = f"q{len(queries) + 1:02d}"
            queries.append({"_id": query_id, "text": q.question})
            qrels.append(f"{query_id}\t{q.passage}\t1")
    return corpus, queries, qrels


def write_jsonl(path: Path, rows: list[dict[str, object]] | list[dict[str, str]]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def main() -> None:
    shutil.rmtree(DOCS_DIR, ignore_errors=True)
    for doc in CORPUS:
        target = DOCS_DIR / doc.path
        target.parent.mkdir(parents=True, exist_ok=True)
        doc.write(target, doc)
        print(f"wrote {target.relative_to(DATA_DIR.parent)} ({target.stat().st_size} bytes)")

    QUESTIONS_FILE.parent.mkdir(parents=True, exist_ok=True)
    records = question_records()
    write_jsonl(QUESTIONS_FILE, records)
    print(f"wrote {QUESTIONS_FILE.relative_to(DATA_DIR.parent)} ({len(records)} questions)")

    corpus, queries, qrels = beir_records()
    shutil.rmtree(BEIR_DIR, ignore_errors=True)
    (BEIR_DIR / "qrels").mkdir(parents=True)
    write_jsonl(BEIR_DIR / "corpus.jsonl", corpus)
    write_jsonl(BEIR_DIR / "queries.jsonl", queries)
    write_text(BEIR_DIR / "qrels" / "test.tsv", "\n".join(qrels) + "\n")
    print(
        f"wrote {BEIR_DIR.relative_to(DATA_DIR.parent)} "
        f"({len(corpus)} passages, {len(queries)} queries)"
    )


if __name__ == "__main__":
    main()
