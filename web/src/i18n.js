/*
 * The widget's built-in words in the visitor's language. The language is the embed tag's
 * data-lang, else the page's <html lang>, else English; "pt-BR" reads as "pt". A site overrides
 * any single string with data-text-<name> (data-text-send="Go"); data-title,
 * data-welcome-message and data-input-placeholder keep their older names.
 */

const ENGLISH = {
  title: "Assistant",
  welcomeMessage: "Hi! Ask me anything and I will help you out.",
  inputPlaceholder: "Type your message...",
  send: "Send",
  stop: "Stop",
  retry: "Retry",
  openChat: "Open chat",
  closeChat: "Close chat",
  conversation: "Conversation", // the message log's accessible name
  message: "Message", // the text box's label
  you: "You", // who said a visitor's message, for screen readers
  suggestions: "Suggested questions",
  unauthorized: "This chat is not set up correctly: the website's chat key was refused. Please let the site owner know.",
  rateLimited: "You are sending messages too quickly. Please wait a moment, then retry.",
  unavailable: "The assistant is unavailable right now. Please try again in a little while.",
  // Also what a site missing from CORS_ORIGIN gets: the browser hides the reason from scripts.
  unreachable: "The assistant could not be reached. Check your connection, then retry.",
  cutOff: "The reply was cut off before it finished.",
  rejected: "This message could not be sent.",
  interrupted: "Reply interrupted",
  // The model stopped before its answer was done (finishReason "length", "content_filter"...).
  cutShort: "This answer was cut short.",
  // Before the links to the site's documents a reply was given (the "sources" event).
  sources: "Sources:",
};

/** Every language the widget speaks, by ISO 639-1 code; each has every key of ENGLISH. */
export const TRANSLATIONS = {
  en: ENGLISH,
  fr: {
    title: "Assistant",
    welcomeMessage: "Bonjour ! Posez-moi vos questions, je suis là pour vous aider.",
    inputPlaceholder: "Écrivez votre message...",
    send: "Envoyer",
    stop: "Arrêter",
    retry: "Réessayer",
    openChat: "Ouvrir la discussion",
    closeChat: "Fermer la discussion",
    conversation: "Conversation",
    message: "Message",
    you: "Vous",
    suggestions: "Questions suggérées",
    unauthorized: "Cette discussion est mal configurée : la clé du site a été refusée. Merci de prévenir le responsable du site.",
    rateLimited: "Vous envoyez des messages trop vite. Patientez un instant, puis réessayez.",
    unavailable: "L'assistant n'est pas disponible pour le moment. Réessayez dans un petit moment.",
    unreachable: "Impossible de joindre l'assistant. Vérifiez votre connexion, puis réessayez.",
    cutOff: "La réponse a été coupée avant la fin.",
    rejected: "Ce message n'a pas pu être envoyé.",
    interrupted: "Réponse interrompue",
    cutShort: "Cette réponse a été écourtée.",
    sources: "Sources :",
  },
  de: {
    title: "Assistent",
    welcomeMessage: "Hallo! Fragen Sie mich, was Sie möchten – ich helfe Ihnen gern.",
    inputPlaceholder: "Nachricht eingeben...",
    send: "Senden",
    stop: "Stopp",
    retry: "Erneut versuchen",
    openChat: "Chat öffnen",
    closeChat: "Chat schließen",
    conversation: "Unterhaltung",
    message: "Nachricht",
    you: "Sie",
    suggestions: "Vorgeschlagene Fragen",
    unauthorized: "Dieser Chat ist falsch eingerichtet: Der Chat-Schlüssel der Website wurde abgelehnt. Bitte informieren Sie den Betreiber.",
    rateLimited: "Sie senden Nachrichten zu schnell. Bitte warten Sie einen Moment und versuchen Sie es dann erneut.",
    unavailable: "Der Assistent ist gerade nicht verfügbar. Bitte versuchen Sie es in Kürze erneut.",
    unreachable: "Der Assistent ist nicht erreichbar. Prüfen Sie Ihre Verbindung und versuchen Sie es erneut.",
    cutOff: "Die Antwort brach ab, bevor sie fertig war.",
    rejected: "Diese Nachricht konnte nicht gesendet werden.",
    interrupted: "Antwort unterbrochen",
    cutShort: "Diese Antwort wurde gekürzt.",
    sources: "Quellen:",
  },
  es: {
    title: "Asistente",
    welcomeMessage: "¡Hola! Pregúntame lo que quieras y te ayudaré.",
    inputPlaceholder: "Escribe tu mensaje...",
    send: "Enviar",
    stop: "Detener",
    retry: "Reintentar",
    openChat: "Abrir chat",
    closeChat: "Cerrar chat",
    conversation: "Conversación",
    message: "Mensaje",
    you: "Tú",
    suggestions: "Preguntas sugeridas",
    unauthorized: "Este chat no está bien configurado: se rechazó la clave del sitio. Avisa al responsable del sitio.",
    rateLimited: "Estás enviando mensajes demasiado rápido. Espera un momento y vuelve a intentarlo.",
    unavailable: "El asistente no está disponible en este momento. Inténtalo de nuevo en un rato.",
    unreachable: "No se pudo contactar con el asistente. Comprueba tu conexión y vuelve a intentarlo.",
    cutOff: "La respuesta se cortó antes de terminar.",
    rejected: "No se pudo enviar este mensaje.",
    interrupted: "Respuesta interrumpida",
    cutShort: "Esta respuesta quedó incompleta.",
    sources: "Fuentes:",
  },
  pt: {
    title: "Assistente",
    welcomeMessage: "Olá! Pergunte o que quiser e eu ajudo.",
    inputPlaceholder: "Escreva sua mensagem...",
    send: "Enviar",
    stop: "Parar",
    retry: "Tentar novamente",
    openChat: "Abrir chat",
    closeChat: "Fechar chat",
    conversation: "Conversa",
    message: "Mensagem",
    you: "Você",
    suggestions: "Perguntas sugeridas",
    unauthorized: "Este chat não está configurado corretamente: a chave do site foi recusada. Avise o responsável pelo site.",
    rateLimited: "Você está enviando mensagens rápido demais. Aguarde um momento e tente novamente.",
    unavailable: "O assistente não está disponível agora. Tente novamente daqui a pouco.",
    unreachable: "Não foi possível contatar o assistente. Verifique sua conexão e tente novamente.",
    cutOff: "A resposta foi cortada antes de terminar.",
    rejected: "Não foi possível enviar esta mensagem.",
    interrupted: "Resposta interrompida",
    cutShort: "Esta resposta ficou incompleta.",
    sources: "Fontes:",
  },
  it: {
    title: "Assistente",
    welcomeMessage: "Ciao! Chiedimi quello che vuoi e ti aiuterò.",
    inputPlaceholder: "Scrivi il tuo messaggio...",
    send: "Invia",
    stop: "Interrompi",
    retry: "Riprova",
    openChat: "Apri la chat",
    closeChat: "Chiudi la chat",
    conversation: "Conversazione",
    message: "Messaggio",
    you: "Tu",
    suggestions: "Domande suggerite",
    unauthorized: "Questa chat non è configurata correttamente: la chiave del sito è stata rifiutata. Avvisa il gestore del sito.",
    rateLimited: "Stai inviando messaggi troppo in fretta. Attendi un momento, poi riprova.",
    unavailable: "L'assistente non è disponibile al momento. Riprova tra poco.",
    unreachable: "Impossibile raggiungere l'assistente. Controlla la connessione, poi riprova.",
    cutOff: "La risposta si è interrotta prima della fine.",
    rejected: "Impossibile inviare questo messaggio.",
    interrupted: "Risposta interrotta",
    cutShort: "Questa risposta è stata troncata.",
    sources: "Fonti:",
  },
  nl: {
    title: "Assistent",
    welcomeMessage: "Hallo! Stel me gerust je vraag, ik help je graag.",
    inputPlaceholder: "Typ je bericht...",
    send: "Versturen",
    stop: "Stoppen",
    retry: "Opnieuw proberen",
    openChat: "Chat openen",
    closeChat: "Chat sluiten",
    conversation: "Gesprek",
    message: "Bericht",
    you: "Jij",
    suggestions: "Voorgestelde vragen",
    unauthorized: "Deze chat is niet goed ingesteld: de chatsleutel van de website werd geweigerd. Laat het de beheerder van de site weten.",
    rateLimited: "Je verstuurt te snel berichten. Wacht even en probeer het dan opnieuw.",
    unavailable: "De assistent is nu niet beschikbaar. Probeer het over een poosje opnieuw.",
    unreachable: "De assistent is niet bereikbaar. Controleer je verbinding en probeer het opnieuw.",
    cutOff: "Het antwoord werd afgebroken voordat het klaar was.",
    rejected: "Dit bericht kon niet worden verstuurd.",
    interrupted: "Antwoord onderbroken",
    cutShort: "Dit antwoord is ingekort.",
    sources: "Bronnen:",
  },
  ar: {
    title: "المساعد",
    welcomeMessage: "مرحبًا! اسألني عن أي شيء وسأساعدك.",
    inputPlaceholder: "اكتب رسالتك...",
    send: "إرسال",
    stop: "إيقاف",
    retry: "إعادة المحاولة",
    openChat: "فتح المحادثة",
    closeChat: "إغلاق المحادثة",
    conversation: "المحادثة",
    message: "الرسالة",
    you: "أنت",
    suggestions: "أسئلة مقترحة",
    unauthorized: "هذه المحادثة غير مُعدّة بشكل صحيح: رُفض مفتاح الموقع. يُرجى إبلاغ صاحب الموقع.",
    rateLimited: "أنت ترسل الرسائل بسرعة كبيرة. انتظر قليلًا ثم أعد المحاولة.",
    unavailable: "المساعد غير متاح الآن. يُرجى المحاولة بعد قليل.",
    unreachable: "تعذّر الوصول إلى المساعد. تحقّق من اتصالك ثم أعد المحاولة.",
    cutOff: "انقطع الرد قبل أن يكتمل.",
    rejected: "تعذّر إرسال هذه الرسالة.",
    interrupted: "انقطع الرد",
    cutShort: "توقفت هذه الإجابة قبل اكتمالها.",
    sources: "المصادر:",
  },
  he: {
    title: "עוזר",
    welcomeMessage: "שלום! אפשר לשאול אותי כל דבר ואשמח לעזור.",
    inputPlaceholder: "כתבו הודעה...",
    send: "שליחה",
    stop: "עצירה",
    retry: "ניסיון חוזר",
    openChat: "פתיחת הצ'אט",
    closeChat: "סגירת הצ'אט",
    conversation: "שיחה",
    message: "הודעה",
    you: "אתם",
    suggestions: "שאלות מוצעות",
    unauthorized: "הצ'אט הזה לא מוגדר כראוי: מפתח האתר נדחה. נא ליידע את בעלי האתר.",
    rateLimited: "ההודעות נשלחות מהר מדי. נא להמתין רגע ולנסות שוב.",
    unavailable: "העוזר אינו זמין כרגע. נא לנסות שוב בעוד זמן קצר.",
    unreachable: "לא ניתן להגיע לעוזר. בדקו את החיבור ונסו שוב.",
    cutOff: "התשובה נקטעה לפני שהסתיימה.",
    rejected: "לא ניתן היה לשלוח את ההודעה.",
    interrupted: "התשובה נקטעה",
    cutShort: "התשובה הזו קוצרה.",
    sources: "מקורות:",
  },
};

const RIGHT_TO_LEFT = new Set(["ar", "he", "fa", "ur"]);

/** The language a widget speaks, its direction and its strings: {lang, dir, text}. */
export function localise(dataset, page = document.documentElement) {
  const asked = (dataset.lang || "").trim();
  const lang = primaryTag(asked || page.lang);
  const pageDirection = page.dir.toLowerCase();
  // An explicit data-lang decides the direction; otherwise a page marked rtl or ltr does.
  const dir = !asked && (pageDirection === "rtl" || pageDirection === "ltr")
    ? pageDirection
    : RIGHT_TO_LEFT.has(lang) ? "rtl" : "ltr";
  const text = { ...ENGLISH, ...TRANSLATIONS[lang] };
  for (const key of Object.keys(ENGLISH)) {
    const override = (dataset[overrideAttribute(key)] || "").trim();
    if (override) text[key] = override;
  }
  return { lang: TRANSLATIONS[lang] ? lang : "en", dir, text };
}

/** "pt-BR" -> "pt"; anything not a language tag -> "". */
function primaryTag(tag) {
  const match = /^([a-z]{2,3})(?:[-_]|$)/i.exec((tag || "").trim());
  return match ? match[1].toLowerCase() : "";
}

/** The dataset name of a string's override: "cutShort" -> "textCutShort" (data-text-cut-short). */
function overrideAttribute(key) {
  return ["title", "welcomeMessage", "inputPlaceholder"].includes(key)
    ? key
    : `text${key[0].toUpperCase()}${key.slice(1)}`;
}
