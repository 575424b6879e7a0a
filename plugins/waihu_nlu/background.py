"""Everyday talk for the background class of ``waihu_nlu.model``: what a callee says aside.

A script lists what its classes are, never what belongs to none of them. On a
call the line stays open while the callee talks about the weather, cooks,
answers a child, or trails off mid-sentence; a model trained on the script's
samples alone gives such talk to whichever class shares a character or two
(油价 → kb.price by 价, 外面好大的风 → affirm by 好). These 328 lines, written
for this purpose across the topics of a household's day, teach the model
what that talk looks like, so its probability goes to the background class.
The words a script's classes use in another sense (明天, 等, 声音, 好, 价,
打, 别, 没) appear here in their everyday senses, so that one of them alone
carries no reply to a class.

None of them is a reply any script class should take: a line that a careful
author would route (在开会, 等会儿再说, 听不见) is left out — such words must
stay with their class.

What it is not: an evaluation set — lines here are training data; the
off-topic replies the model is measured on are written apart from them.
"""

from __future__ import annotations

__all__ = ["EVERYDAY"]

# topic → its lines, space-separated (the topic names are for the reader; only lines are trained)
_TOPICS: dict[str, str] = {
    "weather": """
        今天真热 明天降温了 这两天一直下雨 早上起了大雾 风刮得窗户直响 昨晚打雷了 下雪路滑
        太阳好晒 天阴沉沉的 晚上有点凉 雨停了没 今年夏天特别闷 外头刮大风 台风要来了 冬天快到了
        天气转凉了 外面下冰雹了 出门带把伞 这天说变就变 风太大晾不了衣服
    """,
    "food and cooking": """
        米饭蒸上了 汤有点淡 再放点盐 红烧肉炖好了 面条煮烂了 今晚吃火锅 早饭吃的包子 菜炒糊了
        油烟机太吵 锅里的油热了 把火关小点 饺子快煮好了 葱姜蒜切好了 冰箱里有剩菜 买点排骨回来
        鸡蛋打碎了一个 米快吃完了 中午吃的盒饭 给孩子热牛奶 水饺下锅了 外卖送错了 这家面馆挺好吃
        西红柿炒鸡蛋 醋放多了 菜都凉透了 饭好了快来吃
    """,
    "home and family": """
        儿子把门带上 闺女作业写完没 老婆你看见我钥匙没 老公把垃圾带下去 妈你坐着别动
        爸在阳台抽烟 孩子又把牛奶打翻了 别玩手机了 去把灯打开 把电视声音调小 遥控器在沙发缝里
        床单该洗了 拖鞋在门口 洗衣机在响 地板刚拖过 小心别滑倒 婆婆来住几天 外公住院了
        舅舅下午过来 姐姐生了个女儿 弟弟考上大学了 孩子在午睡 小声点孩子睡了 你把水杯递给我
        衣柜门坏了 马桶堵了 热水器没热水了 暖气不热 窗帘拉上 被子晒一晒 宝宝该换尿布了
        奶粉冲好了 别碰插座 把剪刀放好 你去看看谁来了 门铃响了 去开下门 婆婆在厨房忙
        老人家耳朵不好 爷爷在下棋 孩子的鞋小了 给孩子剪指甲 先把药吃了
    """,
    "traffic and travel": """
        前面堵死了 红灯好长 找不到停车位 车没油了 加油站排长队 高架上出事故了 地铁坐过站了
        公交挤不上去 打不到车 导航又绕路了 这条路在修 限行了今天开不了 停车费真贵 骑电瓶车上班
        下雨天路不好走 车胎没气了 前面有交警 过了这个路口就到 火车晚点半小时 飞机延误了
        高铁站人山人海 出租车司机绕路 共享单车都坏了 电动车被偷了 桥上堵得一动不动
    """,
    "work": """
        这个报表还没做完 工资还没发 同事请假了 厂里订单多 下午有个培训 打卡机坏了 食堂的饭不好吃
        老板出差了 快递要今天发出去 仓库在盘点 机器又卡住了 新来的同事挺勤快 年终奖还没着落
        会议室被人占了 客户在楼下等着 文件打印好了 电脑死机了 打印机没纸了 这个月业绩不行
        明天要交材料 车间太热了 下班去接孩子 夜班刚下来 工地在浇水泥 收银台排队了 货还没到
        老板娘在算账
    """,
    "shopping and prices": """
        超市打折 鸡蛋涨价了 菜市场的青菜便宜 这件衣服有点大 鞋子买小了 网上买的东西还没到
        退货太麻烦了 商场人真多 大米十块钱一袋 水果不新鲜 买了两斤苹果 排骨三十多一斤 牛奶过期了
        奶茶店排长队 小卖部关门了 买个西瓜回去 这个月花超了 双十一买太多了 今天逛街走累了
        衣服颜色不好看 柜台在结账 找零钱给我
    """,
    "health": """
        腰疼得直不起来 感冒还没好 嗓子有点哑 吃了药好多了 明天去医院复查 血压有点高
        挂号排了一上午 膝盖老疼 眼睛看东西模糊 孩子咳嗽好几天了 晚上睡不着 最近胃不舒服
        打了点滴好多了 要去拔牙 体检报告出来了 多喝热水 医生让我少吃盐 老毛病又犯了 脚崴了
        手指划了个口子
    """,
    "TV and pastimes": """
        电视剧更新了 昨天的球赛输了 新闻里说要降温 综艺节目挺好笑 明星又离婚了 电影院人不多
        广场舞开始了 孩子在看动画片 游戏又输了 听首歌放松一下 小说看到一半 那部片子真好看
        直播间在抢货 短视频刷了一晚上 春晚节目不好看 演唱会门票抢不到 跳完舞回来了
        打牌输了二十块 下象棋去了 钓鱼钓了一上午
    """,
    "neighbours": """
        楼下那家在吵架 隔壁小孩弹钢琴 物业来收费了 楼上天天蹦 小区门口在修路 邻居送了些菜
        保安不让进 快递柜满了 垃圾分类好麻烦 电梯里有人抽烟 对门搬来新邻居 楼下停满了车
        小区的狗乱叫 物业又不管事 老王家孩子结婚 张阿姨来串门了 社区在发鸡蛋 居委会来登记了
        院子里的花开了
    """,
    "school and children": """
        孩子今天考试 家长会在周五 老师布置的作业太多 校服该洗了 孩子跟同学打架了 书包好重
        接孩子迟到了 孩子说肚子疼 学校要交午餐费 孩子在背课文 放暑假了 孩子想去游乐园
        女儿学会骑车了 孩子又长高了 小孩换牙了 孩子不肯睡觉 这道题我也不会 给孩子检查作业
    """,
    "said to someone in the room": """
        你先别说话 你去那边玩 别动我手机 把那个给我拿过来 嘘 你先去睡 我这正说着呢 你自己看着办
        哎呀你别闹 你过来一下 快点换鞋 外面谁啊 是快递吗 放门口就行 谢谢师傅 你帮我拿一下 慢点走
        让他进来 你先吃 给他倒杯水 坐那儿别动 我马上就来 你喊你爸过来 拿个碗来 帮我看着锅
        水龙头关一下 小心台阶 关门的时候轻点
    """,
    # "hold on" while the callee does something: no call put off, the line stays open
    "asking to hold": """
        你等一下我开个门 等一下我把孩子放下 稍等我换只手拿 你等等我找个地方坐 等一下我去拿笔
        稍等一下我把水关了 你等会我把车停好 等一下我拿个耳机 稍等我擦个手 你等一下我出去说
        等一下我把锅端下来 你稍等我把窗户关上 等等我把电视关小 稍等我戴上眼镜
    """,
    "half-sentences and fillers": """
        那个什么 就是那个 怎么说呢 我想想啊 嗯嗯那个 呃这个 反正就是 然后呢那个 哎那个谁 怎么讲
        我跟你讲啊那个 其实吧那个 这个嘛 那啥那啥 哎呀这个 然后就 就那样吧 反正那个 这怎么说
        我记得好像 这个事情吧
    """,
    "errands and household things": """
        快递放驿站了 手机要充电了 水电费该交了 银行卡找不到了 身份证过期了 去社区办点事
        下午去剪头发 衣服送去干洗 钱包落在车上了 眼镜放哪儿了 充电宝没电了 雨伞忘带了
        钥匙锁屋里了 电话费又扣多了 网络有点卡 路由器重启一下 电脑中病毒了 微波炉坏了 灯泡烧了
        水管冻住了 煤气快用完了 房租该交了 信用卡要还了 去邮局寄东西 证件照拍好了
    """,
}
EVERYDAY: tuple[str, ...] = tuple(line for lines in _TOPICS.values() for line in lines.split())
