from ui import chat_page

chat_page.render()
