"""Built-in notifier plugin: hot leads to a WeChat Work (企业微信) group robot.

``waihu_wechat.robot`` posts, ``waihu_wechat.message`` lays out the markdown,
``waihu_wechat.pacing`` keeps to the API's 20 messages a minute.
"""
