from ui import feedback_page

feedback_page.render()
