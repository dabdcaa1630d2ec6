"""The widget speaks the visitor's language and mirrors itself on right-to-left pages, in
Chromium, through the real service (web/src/i18n.js)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser import SCREENSHOTS, embed_tag, visit

# Written here from the languages themselves, not read from the widget's tables: the Send and
# Open chat labels, the text box's placeholder and the refused-key message, per page language.
LANGUAGES = {
    "en": ("Send", "Open chat", "Type your message...", "the website's chat key was refused"),
    "fr": ("Envoyer", "Ouvrir la discussion", "Écrivez votre message...", "la clé du site a été refusée"),
    "de": ("Senden", "Chat öffnen", "Nachricht eingeben...", "Chat-Schlüssel der Website wurde abgelehnt"),
    "es": ("Enviar", "Abrir chat", "Escribe tu mensaje...", "se rechazó la clave del sitio"),
    "pt-BR": ("Enviar", "Abrir chat", "Escreva sua mensagem...", "a chave do site foi recusada"),
    "it": ("Invia", "Apri la chat", "Scrivi il tuo messaggio...", "la chiave del sito è stata rifiutata"),
    "nl": ("Versturen", "Chat openen", "Typ je bericht...", "de chatsleutel van de website werd geweigerd"),
    "ar": ("إرسال", "فتح المحادثة", "اكتب رسالتك...", "رُفض مفتاح الموقع"),
    "he": ("שליחה", "פתיחת הצ'אט", "כתבו הודעה...", "מפתח האתר נדחה"),
}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_built_in_words_follow_the_pages_language(page, api, host_site, lang):
    send, open_chat, placeholder, refused = LANGUAGES[lang]
    tag = embed_tag(api.url, api_key="not-the-widget-key-0123456789")
    visit(page, host_site.page(f"/lang-{lang}", tag, html_attributes=f'lang="{lang}"'))
    page.get_by_role("button", name=open_chat).click()
    expect(page.get_by_role("textbox")).to_have_attribute("placeholder", placeholder)
    page.get_by_role("textbox").fill("?")
    page.get_by_role("button", name=send).click()
    expect(page.locator(".notice")).to_contain_text(refused)  # a failure message, in that language too


def test_data_lang_wins_over_the_page_and_single_strings_can_be_overridden(page, api, host_site, upstream):
    upstream.stream_bytes = [  # an answer the model cut at its token limit
        b'data: {"choices": [{"delta": {"content": "Erstens, zweitens"}}]}\n\n',
        b'data: {"choices": [{"delta": {}, "finish_reason": "length"}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    tag = embed_tag(api.url, lang="de", text_send="Los", text_cut_short="Gekürzt.", title="Hilfe")
    widget = visit(page, host_site.page("/lang-override", tag, html_attributes='lang="fr"'))
    page.get_by_role("button", name="Chat öffnen").click()
    expect(page.get_by_role("dialog", name="Hilfe")).to_be_visible()
    page.get_by_role("textbox", name="Nachricht").fill("Hallo")
    page.keyboard.press("Enter")
    widget.wait_until_idle()
    expect(page.get_by_role("button", name="Los")).to_be_visible()
    expect(page.locator(".message.assistant .note")).to_have_text("Gekürzt.")
    expect(page.get_by_role("button", name="Chat schließen").first).to_be_visible()
    expect(widget.replies.first).to_have_text("Hallo! Fragen Sie mich, was Sie möchten – ich helfe Ihnen gern.")


def test_an_unknown_language_falls_back_to_english(page, api, host_site):
    visit(page, host_site.page("/lang-unknown", embed_tag(api.url), html_attributes='lang="tlh"'))
    page.get_by_role("button", name="Open chat").click()
    expect(page.get_by_role("button", name="Send")).to_be_visible()


@pytest.mark.parametrize(
    "html_attributes, embed",
    [('lang="ar"', {}), ('lang="he" dir="rtl"', {}), ('lang="en" dir="rtl"', {}), ('lang="en"', {"lang": "ar"})],
    ids=["arabic page", "hebrew page", "rtl page", "data-lang arabic"],
)
def test_a_right_to_left_page_gets_a_mirrored_panel(page, api, host_site, upstream, html_attributes, embed):
    widget = visit(page, host_site.page("/rtl", embed_tag(api.url, **embed), html_attributes=html_attributes))
    corner = page.locator("#os-chat-widget-root").bounding_box()
    assert (corner["x"], corner["y"] + corner["height"]) == (20, 800 - 20)  # bottom left, not right
    widget.launcher.click()
    expect(widget.panel).to_be_visible()
    page.get_by_role("textbox").fill("Hello")
    page.get_by_role("textbox").press("Enter")
    widget.wait_until_idle()
    assert widget.style(".widget", "direction") == "rtl"
    panel = widget.panel.bounding_box()
    assert panel["x"] == 20
    log = page.locator(".log").bounding_box()
    reply = page.locator(".message.assistant").last.bounding_box()
    question = page.locator(".message.user").last.bounding_box()
    # The assistant speaks from the right edge, the visitor from the left: a mirror of left-to-right.
    assert reply["x"] + reply["width"] > log["x"] + log["width"] - 30
    assert question["x"] < log["x"] + 30
    send = page.locator(".send").bounding_box()
    textbox = page.get_by_role("textbox").bounding_box()
    assert send["x"] < textbox["x"]  # Send sits at the line's end: the left
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "widget-rtl.png")
