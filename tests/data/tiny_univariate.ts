# A tiny univariate equal-length file in the UCR format (hand-written test fixture).
@problemName TinyUni
@timeStamps false
@missing false
@univariate true
@equalLength true
@seriesLength 6
@classLabel true low high
@data
0.1,0.2,0.1,0.0,0.1,0.2:low
0.0,0.1,0.2,0.1,0.0,0.1:low
0.2,0.1,0.0,0.1,0.2,0.1:low
1.1,1.2,1.1,1.0,1.1,1.2:high
1.0,1.1,1.2,1.1,1.0,1.1:high
1.2,1.1,1.0,1.1,1.2,1.1:high
