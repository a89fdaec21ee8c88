"""The Telegram bot: turns chats, photos and inline queries into engine calls (and chats in a terminal)."""
